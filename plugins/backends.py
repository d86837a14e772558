"""The built-in model backends: ``transformers`` (in-process) and ``openai`` (a server)."""

from smolvlm_watch import hookimpl
from smolvlm_watch.config import ModelConfig, RuntimeConfig
from smolvlm_watch.engine import Backend, Engine


def _transformers(model: ModelConfig, runtime: RuntimeConfig) -> Engine:
    from smolvlm_watch.runtime import Runtime

    return Runtime(model, runtime)


def _openai(model: ModelConfig, runtime: RuntimeConfig) -> Engine:
    from smolvlm_watch.remote import RemoteRuntime

    return RemoteRuntime(model, runtime)


def _quantizable(model: ModelConfig) -> list[str]:
    """int8 is torch's dynamic quantization: float32 weights in, CPU kernels only."""
    if model.quantize != "int8":
        return []
    problems = []
    if model.dtype not in ("auto", "float32"):
        problems.append(f"model.quantize: int8 quantizes float32 weights; set model.dtype: auto or float32 "
                        f"(not {model.dtype})")
    if model.device not in ("auto", "cpu"):
        problems.append(f"model.quantize: int8 runs on the CPU only (torch's dynamic quantization has no "
                        f"{model.device} kernels); on a GPU use model.quantize: none")
    return problems


def _needs_server(model: ModelConfig) -> list[str]:
    return [f"model.{key}: missing: model.backend openai needs base_url and name"
            for key in ("base_url", "name") if not getattr(model, key)]


@hookimpl
def register_backends(register):
    register(Backend("transformers", _transformers,
                     "SmolVLM2 in this process with transformers: CPU (bf16 where the CPU has it), CUDA, MPS",
                     check=_quantizable))
    register(Backend("openai", _openai, "an OpenAI-compatible server: vLLM, llama.cpp, transformers serve",
                     check=_needs_server))
