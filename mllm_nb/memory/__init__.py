"""The parts that ``mllm_nb.fit`` and ``mllm_nb.budget`` share, lowest first.

* :mod:`~mllm_nb.memory.arguments`: the spellings of quantization, dtype and counts; ``PlanError``.
* :mod:`~mllm_nb.memory.architecture`: a config built on the meta device, and what bitsandbytes quantizes in it.
* :mod:`~mllm_nb.memory.sizes`: bytes of the loaded weights, of the KV cache per token, of prefill activations.
* :mod:`~mllm_nb.memory.resolution`: a model id, folder, config or catalog entry -> config and checkpoint facts.
* :mod:`~mllm_nb.memory.targets`: the machines a fit is planned for (T4, L4, A100, CPU, this machine).
* :mod:`~mllm_nb.memory.tokens`: how many LLM tokens an image becomes (catalog counts and processor rules).
* :mod:`~mllm_nb.memory.report`: the report base both verdicts render with (table, text, HTML, raise).
* :mod:`~mllm_nb.memory.measured`: what a loaded model really uses (weights per device, CUDA counters, RAM)
  beside its plan: ``VLM.memory()``.
* :mod:`~mllm_nb.memory.training`: what LoRA / QLoRA training needs (base, adapters, gradients, AdamW state,
  activations, logits): ``fit(..., training=TrainingSettings(...))`` and ``plan_training``.

The entry points stay :mod:`mllm_nb.plan` (``fit``) and :mod:`mllm_nb.context_budget` (``budget``).
"""
