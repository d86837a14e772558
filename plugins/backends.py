"""The built-in model backends: ``transformers`` (in-process) and ``openai`` (a server)."""

from smolvlm_watch import doctor, hookimpl
from smolvlm_watch.config import RuntimeConfig
from smolvlm_watch.engine import Backend, Engine
from smolvlm_watch.remote import RemoteModel
from smolvlm_watch.runtime import TransformersModel


def _transformers(model: TransformersModel, runtime: RuntimeConfig) -> Engine:
    from smolvlm_watch.runtime import Runtime

    return Runtime(model, runtime)


def _openai(model: RemoteModel, runtime: RuntimeConfig) -> Engine:
    from smolvlm_watch.remote import RemoteRuntime

    return RemoteRuntime(model, runtime)


@hookimpl
def register_backends(register):
    register(Backend("transformers", _transformers,
                     "SmolVLM2 in this process with transformers: CPU (bf16 where the CPU has it), CUDA, MPS",
                     check=TransformersModel.problems, model=TransformersModel, doctor=doctor.transformers_checks))
    register(Backend("openai", _openai, "an OpenAI-compatible server: vLLM, llama.cpp, transformers serve",
                     check=RemoteModel.problems, model=RemoteModel, doctor=doctor.remote_checks))
