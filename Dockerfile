# One image for every radfed service (coordinator, clinic node, dashboard).
FROM python:3.11-slim
WORKDIR /opt/radfed
COPY pyproject.toml README.md ./
COPY radfed radfed
COPY server server
COPY client_node client_node
COPY dashboard dashboard
COPY strategies strategies
RUN pip install --no-cache-dir ".[oidc]" && useradd --create-home radfed
USER radfed
ENV RADFED_HOME=/home/radfed/.radfed
