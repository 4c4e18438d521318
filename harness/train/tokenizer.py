"""A small byte-level BPE tokenizer trained on the dataset's own text, plus one token per SID level-code.

Why train one: the embedded default must work with no downloads, and a 1k-token vocabulary keeps the
scratch model's embedding (and the cost of every softmax) small. SID tokens are added as normal,
non-special tokens, so ``decode(..., skip_special_tokens=True)`` keeps them: tokens added as *special* ones
vanish there, and trl's GRPOTrainer decodes completions that way before the rewards read them.

Two styles:
- ``llama`` (the default's): GPT-2's pre-tokenisation, ``<pad>``/``<eos>``/``<unk>``.
- ``qwen2``: Qwen2's tokenizer *behaviour* without its vocabulary (which would need a download): its
  pre-tokenisation rule (punctuation keeps a trailing newline, digits split one by one), its special tokens
  (``<|endoftext|>`` pads, ``<|im_end|>`` ends a turn, no BOS) and a ChatML chat template. What upstream's
  scripts assume of Qwen2.5 then holds here too: e.g. ``"### Response:\\n"`` is exactly three tokens, which
  upstream's evaluate.py relies on when it keys its constraint on the prompt's last three tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
QWEN2_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2's pre-tokenisation (its tokenizer.json "Split" pattern).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Section headers of Alpaca-style instruction prompts (upstream's prompts use them): always in the corpus, so a
# trained vocabulary renders each as whole tokens, as a pretrained one does.
SECTION_HEADERS = ("### Instruction:\n", "### Input:\n", "### User Input: \n", "### Response:\n")


def train_tokenizer(texts: Iterable[str], vocab_size: int, sid_tokens: list[str],
                    style: str = "llama") -> PreTrainedTokenizerFast:
    texts = list(texts)
    if style == "qwen2":
        texts += list(SECTION_HEADERS) * 50
        special = list(QWEN2_SPECIAL)
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        special = [PAD, EOS, UNK]
        bpe = Tokenizer(models.BPE(unk_token=UNK))
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    if style == "qwen2":
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|endoftext|>", eos_token="<|im_end|>")
        tok.chat_template = CHATML
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    tok.add_tokens(sid_tokens)
    return tok


def save_tokenizer(tok, out) -> None:
    """``save_pretrained``, readable by the transformers 4.x of upstream's environment as well: transformers 5
    names the class ``TokenizersBackend``, which 4.x does not know; ``PreTrainedTokenizerFast`` is the same class
    in 5 and loads tokenizer.json as it is in 4."""
    import json
    from pathlib import Path

    tok.save_pretrained(str(out))
    cfg_path = Path(out) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
