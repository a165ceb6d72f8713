# megc-vqa with its training and answering dependencies on a CUDA runtime; the CLI is the entrypoint.
#
#   docker build -t megc-vqa .
#   docker run --gpus all --rm -v $PWD/runs:/app/runs -v /data/megc:/data megc-vqa ask \
#       --model qwen2.5-vl-3b --adapter runs/lora --clip /data/test/SAMM/SAMM-1
#   docker run --gpus all --rm --entrypoint python -v ... megc-vqa eval/run_vqa.py --questions ... --out runs/pred
#   docker run --gpus all --rm --entrypoint accelerate -v ... megc-vqa launch recipes/finetune.py --config ...
#
# PyTorch wheels bring their own CUDA libraries; the base image supplies the runtime layout and cuDNN,
# the host only needs an NVIDIA driver recent enough for them. Hugging Face downloads go to /cache
# (mount a volume there to keep weights between runs).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG TORCH_INDEX_URL=""
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/cache/huggingface \
    MEGC_VQA_CACHE=/cache/megc_vqa \
    TOKENIZERS_PARALLELISM=false

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
        libgl1 libglib2.0-0 ffmpeg \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# Dependencies first (cached layer), then the code.
COPY pyproject.toml README.md ./
COPY megc_vqa ./megc_vqa
RUN pip install --upgrade pip \
    && pip install ${TORCH_INDEX_URL:+--extra-index-url $TORCH_INDEX_URL} ".[train]"
COPY recipes ./recipes
COPY eval ./eval
COPY data_prep ./data_prep
COPY benchmarks ./benchmarks
COPY data ./data
COPY Makefile ./

ENTRYPOINT ["megc-vqa"]
CMD ["--help"]
