"""Stage 4, refine: caption (+ style) -> Prompt(positive, negative)."""

from __future__ import annotations

from ..registry import Registry
from ..stages import Refiner  # noqa: F401 - the stage's contract (backdrop.stages)

REFINERS = Registry(
    "refine",
    {
        "template": ".refine.template:TemplateRefiner",
        "llama-cpp": ".refine.llm:LlamaCppRefiner",
        "gpt4all": ".refine.llm:GPT4AllRefiner",
    },
    {
        "template": "no weights: style presets as {prompt} templates with paired negatives",
        "llama-cpp": "a local GGUF chat model through llama-cpp-python",
        "gpt4all": "a local GGUF chat model through GPT4All",
    },
)
