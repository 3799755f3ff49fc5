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
VOLUME /data
EXPOSE 8000
CMD ["genq", "web"]
