# One image for every part: web, scheduler and worker differ only in their command.
FROM python:3.11-slim
ARG TORCH=torch==2.13.0
ENV PYTHONUNBUFFERED=1 GENQ_HOME=/data GENQ_ARTIFACTS=/data/artifacts GENQ_HOST=0.0.0.0
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY genq genq
COPY core core
COPY web web
COPY worker worker
RUN pip install --no-cache-dir "$TORCH" && pip install --no-cache-dir .
# genq's decoding kernel, built here with a compiler that does not stay in the image (genq.core.models.gpt.kernels)
ENV GENQ_KERNEL_CACHE=/opt/genq/kernels
RUN apt-get update && apt-get install -y --no-install-recommends g++ && python -m genq.core.models.gpt.kernels \
    && apt-get purge -y g++ && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
VOLUME /data
EXPOSE 8000
CMD ["genq", "web"]
