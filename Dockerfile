# statevad serve in a container: CPU torch, the serve extra, a non-root user, the service on port 8780.
#   docker build -t statevad .
#   docker run -p 8780:8780 -e STATEVAD_TOKEN=$(cat token) -v $PWD/config:/config:ro -v statevad-data:/data \
#       statevad serve --config /config/cameras.toml --host 0.0.0.0 --data /data
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The CPU build of the pinned torch (the default index would pull the CUDA build, several GB).
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir '.[serve]'
RUN useradd --create-home --uid 10001 statevad && mkdir -p /data && chown statevad /data
USER statevad
VOLUME /data
EXPOSE 8780
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8780/healthz', timeout=4)"
ENTRYPOINT ["statevad"]
CMD ["serve", "--config", "/config/cameras.toml", "--host", "0.0.0.0", "--data", "/data"]
