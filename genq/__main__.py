from genq.cli import run

run()
