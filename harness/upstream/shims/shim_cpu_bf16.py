"""sft.py hard-codes ``TrainingArguments(bf16=True)`` without ``use_cpu``; on a machine without a GPU, transformers
4.57 then refuses to start ("Your setup doesn't support bf16/gpu"). With CUDA absent this sets ``use_cpu=True``,
so training runs in bf16 autocast on the CPU, as it would on a GPU. With CUDA present it does nothing."""

import torch

if not torch.cuda.is_available():
    import transformers

    _post_init = transformers.TrainingArguments.__post_init__

    def __post_init__(self, *args, **kwargs):
        self.use_cpu = True
        return _post_init(self, *args, **kwargs)

    transformers.TrainingArguments.__post_init__ = __post_init__
