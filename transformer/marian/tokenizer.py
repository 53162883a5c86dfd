"""OPUS-MT (Marian) vocabularies and SentencePiece models as this project's tokenizers.

An OPUS-MT model reads text through two SentencePiece unigram models (`source.spm`, `target.spm`)
whose pieces are looked up in a vocabulary (`vocab.json`, shared by both sides, or one per side).
`MarianTokenizer` (Hugging Face) runs the `sentencepiece` library for the first step and a Python
dict for the second. Here the same pipeline is rebuilt in the `tokenizers` library, so that a
converted checkpoint carries its tokenizers as JSON like every other checkpoint (no .spm files,
no `sentencepiece` at translation time) and encodes in Rust:

- normaliser: the spm's own precompiled character map (NFKC-like rules compiled into the model),
  then what SentencePiece's `remove_extra_whitespaces` does (strip, collapse runs of spaces);
- pre-tokenizer: Metaspace, spaces become "▁" and a "▁" is put in front (spm's dummy prefix);
- model: Unigram over the vocabulary in *this project's* id order (see `MarianVocabulary`), each
  piece scored with its log-probability from the spm, so the best segmentation is spm's;
- target-language tokens of multi-target models (`>>de<<`) are added tokens: written at the start
  of a source sentence they stay one token, as `MarianTokenizer` keeps them.

A vocabulary shared by both sides holds pieces of the other side's spm. SentencePiece never
produces those, except one kind: a character this spm does not know comes out as a piece of its
own, which MarianTokenizer then looks up in the vocabulary (so it gets an id when the other side
knows it, <unk> otherwise). Here a vocabulary entry of one character that this spm lacks is scored
as SentencePiece scores an unknown character, and a longer foreign entry far below any real piece.
What remains different: SentencePiece makes a *run* of unknown characters one piece ("üß" in
English text, "1102" where the spm has no digits), which the vocabulary rarely holds (<unk>); here
each character of the run is looked up on its own. bench/experiments/marian_tokenizer_agreement.py measures the
agreement on Multi30k (identical ids for 100% of English sources, 99.6-99.9% of German targets,
with spm models of 4,000 pieces that lack the digits and some capitals).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from transformer.tokenization.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, UNK

# Far below any real piece's log-probability (spm scores are > -100 in practice): a vocabulary
# entry that this side's spm does not have is chosen only where nothing else covers the text.
FOREIGN_PIECE_SCORE = -1e6
UNKNOWN_PENALTY = (
    10.0  # SentencePiece's kUnkPenalty: an unknown character's score below the minimum
)


class ConversionError(ValueError):
    """A model (or its vocabulary or SentencePiece model) that cannot be read or converted
    faithfully; the message says what to do. `transformer convert` exits 2 with it."""


def refuse_unless(condition: bool, message: str) -> None:
    """Raise `message` as a ConversionError unless `condition` holds."""
    if not condition:
        raise ConversionError(message)


@dataclass
class MarianVocabulary:
    """A Marian vocabulary (tokens in Marian's id order) and where each of its ids goes in ours.

    Marian numbers </s> 0, <unk> 1, the ordinary pieces next, <pad> last, and starts decoding from
    <pad>. This project fixes <pad> 0, <unk> 1, <s> 2, </s> 3 for every tokenizer (checked all
    over the code), so the importer reorders the vocabulary, and with it the rows of the
    embeddings, the output projection and its bias, instead of making the special ids
    configurable everywhere. Our <s> (the decoder's first input) is a copy of the row Marian
    starts decoding from: ours has one token more than Marian's."""

    tokens: list[str]  # Marian id -> token
    pad_id: int  # Marian's <pad>, which is also its decoder start
    eos_id: int
    unk_id: int

    def __post_init__(self) -> None:
        found = {token: self.tokens[i] for token, i in ((PAD, self.pad_id), (EOS, self.eos_id))}
        found[UNK] = self.tokens[self.unk_id]
        for expected, token in found.items():
            if token != expected:
                raise ConversionError(
                    f"the vocabulary's special ids do not match its tokens ({expected} is "
                    f"{token!r}); this model's vocabulary is not Marian's, it cannot be converted"
                )
        if BOS in self.tokens:
            raise ConversionError(
                f"the vocabulary has a {BOS} token; Marian models start decoding from {PAD}, and "
                f"a vocabulary with its own {BOS} is not supported"
            )

    @classmethod
    def from_tokens(cls, tokens: list[str]) -> MarianVocabulary:
        """A vocabulary whose special ids are found by name (<pad>, </s>, <unk>)."""
        index = {token: i for i, token in enumerate(tokens)}
        missing = [token for token in (PAD, EOS, UNK) if token not in index]
        if missing:
            raise ConversionError(f"the vocabulary lacks {', '.join(missing)}")
        return cls(tokens, pad_id=index[PAD], eos_id=index[EOS], unk_id=index[UNK])

    @property
    def our_rows(self) -> list[int]:
        """Our id -> the Marian id whose embedding/projection row it takes (length V + 1): <pad>,
        <unk>, <s> (= Marian's decoder start, its <pad>), </s>, then the other tokens in order."""
        special = {self.pad_id, self.unk_id, self.eos_id}
        ordinary = [i for i in range(len(self.tokens)) if i not in special]
        return [self.pad_id, self.unk_id, self.pad_id, self.eos_id, *ordinary]

    @property
    def our_ids(self) -> list[int]:
        """Marian id -> our id (the inverse of `our_rows`, where <pad> maps to our <pad>)."""
        ids = [0] * len(self.tokens)
        for ours, marian in reversed(list(enumerate(self.our_rows))):  # <pad> ends at our 0
            ids[marian] = ours
        return ids

    @property
    def our_tokens(self) -> list[str]:
        """Our vocabulary, in our id order."""
        return [*SPECIAL_TOKENS, *(self.tokens[i] for i in self.our_rows[len(SPECIAL_TOKENS) :])]


def read_vocabulary(path: Path) -> MarianVocabulary:
    """A Hugging Face vocab.json ({token: id}, <pad> included)."""
    try:
        return MarianVocabulary.from_tokens(read_tokens(path))
    except ConversionError as error:
        raise ConversionError(f"{str(path)!r}: {error}") from None


def read_tokens(path: Path) -> list[str]:
    """A vocab.json ({token: id}) or Marian .yml vocabulary, as tokens in id order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConversionError(f"cannot read vocabulary {str(path)!r}: {error.strerror}") from None
    try:
        if path.suffix == ".json":
            mapping = json.loads(text)
        else:  # BaseLoader keeps every key a string: tokens such as "null" or "yes" stay tokens
            mapping = yaml.load(text, Loader=yaml.BaseLoader)
        ids = {str(token): int(i) for token, i in mapping.items()}
    except (ValueError, AttributeError, yaml.YAMLError) as error:
        raise ConversionError(
            f"{str(path)!r} is not a vocabulary of token: id lines ({type(error).__name__})"
        ) from None
    refuse_unless(
        sorted(ids.values()) == list(range(len(ids))),
        f"the ids in {str(path)!r} are not 0..V-1 without gaps or repeats",
    )
    tokens = [""] * len(ids)
    for token, i in ids.items():
        tokens[i] = token
    return tokens


def _load_spm_proto(path: Path) -> object:
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise ConversionError(
            'reading SentencePiece models needs the convert extra: pip install -e ".[convert]"'
        ) from None
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except OSError as error:
        raise ConversionError(f"cannot read {str(path)!r}: {error.strerror}") from None
    except Exception as error:  # protobuf's DecodeError and friends
        raise ConversionError(
            f"{str(path)!r} is not a SentencePiece model ({type(error).__name__})"
        ) from None
    if not proto.pieces:
        raise ConversionError(f"{str(path)!r} is not a SentencePiece model (no pieces)")
    return proto


def marian_tokenizer(spm_path: str | Path, vocabulary: MarianVocabulary) -> Tokenizer:
    """The `tokenizers` equivalent of encoding with `spm_path` and looking the pieces up in
    `vocabulary`, with this project's id order and special tokens."""
    proto = _load_spm_proto(Path(spm_path))
    model_types = type(proto.trainer_spec).ModelType
    if proto.trainer_spec.model_type != model_types.Value("UNIGRAM"):
        kind = model_types.Name(proto.trainer_spec.model_type)
        raise ConversionError(
            f"{str(spm_path)!r} is a SentencePiece {kind} model; only unigram models (those of "
            "OPUS-MT) are supported, BPE-vocabulary models are not"
        )
    if proto.trainer_spec.byte_fallback:
        raise ConversionError(f"{str(spm_path)!r} uses byte fallback, which is not supported")
    piece_types = type(proto.pieces[0]).Type
    kept_types = {piece_types.Value("NORMAL"), piece_types.Value("USER_DEFINED")}
    scores = {piece.piece: piece.score for piece in proto.pieces if piece.type in kept_types}
    # A character this spm does not know is one piece of its own in SentencePiece, scored
    # UNKNOWN_PENALTY below its least likely piece, and MarianTokenizer looks that character up
    # in the vocabulary (<unk> only if absent). A vocabulary entry of one character that is not
    # one of this spm's pieces is exactly such a character; a longer one is never a piece here.
    unknown_character = min(scores.values()) - UNKNOWN_PENALTY
    vocab = [
        (token, scores.get(token, unknown_character if len(token) == 1 else FOREIGN_PIECE_SCORE))
        for token in vocabulary.our_tokens
    ]
    for special in range(len(SPECIAL_TOKENS)):  # never produced by the Unigram model itself
        vocab[special] = (vocab[special][0], FOREIGN_PIECE_SCORE)
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=1, byte_fallback=False))

    steps = []
    if proto.normalizer_spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap))
    if proto.normalizer_spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    prepend = "always" if proto.normalizer_spec.add_dummy_prefix else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=prepend)
    tokenizer.decoder = decoders.Metaspace(prepend_scheme=prepend)

    tokenizer.add_special_tokens([AddedToken(token, special=True) for token in SPECIAL_TOKENS])
    language_tokens = [t for t in vocabulary.tokens if t.startswith(">>") and t.endswith("<<")]
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in language_tokens])
    return tokenizer
