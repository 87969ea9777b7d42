"""A tiny WordPiece tokenizer for the text tests."""

from __future__ import annotations

WORDS = ("good", "bad", "movie", "film", "great", "awful", "plot", "the", "a")


def write_tokenizer(path, words=WORDS):
    """A tiny WordPiece tokenizer.json (BERT special tokens, lower-casing, [CLS] text [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path
