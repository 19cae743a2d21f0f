"""The model options every command that loads a model takes."""

from __future__ import annotations

import argparse


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="auto",
        help="embedded name, .gguf file, local model directory or hub id (default: auto, the embedded "
        "model this machine runs best: `codeassist models` says which and why)",
    )
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto|packed|bf16|fp16|fp32 (default: auto: GGUF models "
                        "run packed on CPU)")
    parser.add_argument(
        "--draft-model", help="a smaller model of the same tokenizer drafting for --model (speculative decoding)"
    )
    parser.add_argument("--engine", default="local",
                        help="local (the model in this process) or the URL of an OpenAI-compatible "
                        "inference engine (vLLM, llama-server) serving completions")
    parser.add_argument("--engine-model", default="", help="--engine URL: the served model's name "
                        "(default: the first model the engine lists)")
    parser.add_argument("--engine-api-key-env", default="CODEASSIST_ENGINE_API_KEY",
                        help="--engine URL: the environment variable holding its API key")
