"""A small byte-level BPE tokenizer trained on the dataset's own text, plus one token per SID level-code.

Why train one: the embedded default must work with no downloads, and a 1k-token vocabulary keeps the
scratch model's embedding (and the cost of every softmax) small. SID tokens are added as normal,
non-special tokens, so ``decode(..., skip_special_tokens=True)`` keeps them (stack notes §2, §5).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, sid_tokens: list[str]) -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE(unk_token=UNK))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    tok.add_tokens(sid_tokens)
    return tok
