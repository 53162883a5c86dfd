"""Decoding invariants: cached search equals full recompute, batched equals one at a time, beam
size 1 equals greedy, and a tiny model trained to copy its input is decoded correctly."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import BOS, EOS, PAD, tiny_model_config
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

import transformer.inference.decoding as decoding
from transformer.config import DecodeConfig, ModelConfig
from transformer.inference.decoding import (
    BEAM_DEFAULTS,
    Hypothesis,
    SearchSettings,
    beam_search,
    decode_batch,
    gnmt_penalty,
    greedy_search,
    max_output_lengths,
    sample_search,
    translate_ids,
)
from transformer.inference.next_token import EnsembleScorer, ModelScorer
from transformer.model import Transformer, build_transformer

sys.path.insert(0, str(Path(__file__).parent.parent / "tools"))
from reference_search import naive_greedy_search  # noqa: E402  (tools/ is not a package)

VOCAB = 20  # ids 4..19 are ordinary tokens


def tiny_config(**overrides: object) -> ModelConfig:
    return tiny_model_config(
        **{
            "src_vocab_size": VOCAB,
            "tgt_vocab_size": VOCAB,
            "tie_output_embedding": True,
            **overrides,
        }
    )


def random_sequences(
    n: int, generator: torch.Generator, shortest: int, longest: int
) -> list[Tensor]:
    lengths = torch.randint(shortest, longest + 1, (n,), generator=generator)
    return [torch.randint(4, VOCAB, (int(length),), generator=generator) for length in lengths]


def pad(sequences: list[Tensor]) -> Tensor:
    return pad_sequence(sequences, batch_first=True, padding_value=PAD)  # (B, S)


@pytest.fixture(scope="module")
def copy_model() -> Transformer:
    """A tiny model trained to copy its input (teacher forcing, a few hundred steps, ~5 s)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_transformer(tiny_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    bos, eos = torch.tensor([BOS]), torch.tensor([EOS])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small train faster on one thread
    try:
        for _ in range(350):
            sequences = random_sequences(64, generator, 3, 8)
            decoder_input = pad([torch.cat([bos, s]) for s in sequences])  # (B, T)
            labels = pad([torch.cat([s, eos]) for s in sequences])  # (B, T)
            logits = model(pad(sequences), decoder_input)  # (B, T, V)
            loss = F.cross_entropy(logits.view(-1, VOCAB), labels.view(-1), ignore_index=PAD)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def random_model() -> Transformer:
    """Untrained, with weights large enough that outputs vary from token to token and an EOS bias
    that makes some outputs end early and others run to the length limit: batching bugs that a
    model of uniform output lengths would hide show up here."""
    torch.manual_seed(1)
    model = build_transformer(tiny_config(norm_placement="pre", tie_output_embedding=False))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
        model.projection.linear.bias[EOS] += 1.5
    return model.eval()


@pytest.fixture(scope="module")
def sources() -> list[Tensor]:
    """Sentences of mixed lengths, so that batches contain padding."""
    return random_sequences(24, torch.Generator().manual_seed(2), 1, 10)


@pytest.fixture(params=["copy", "random"])
def model(request: pytest.FixtureRequest) -> Transformer:
    return request.getfixturevalue(f"{request.param}_model")


def teacher_forced_log_prob(model: Transformer, source: Tensor, tokens: list[int]) -> float:
    """Sum of log-probabilities of tokens + EOS given the source, from one full forward pass."""
    decoder_input = torch.tensor([[BOS, *tokens]])  # (1, T)
    labels = torch.tensor([*tokens, EOS])  # (T,)
    with torch.no_grad():
        log_probs = model(source[None], decoder_input)[0].log_softmax(dim=-1)  # (T, V)
    return float(log_probs.gather(1, labels[:, None]).sum())


def assert_same(a: list[Hypothesis], b: list[Hypothesis], atol: float = 1e-4) -> None:
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=atol)
    assert [h.log_prob for h in a] == pytest.approx([h.log_prob for h in b], abs=atol)


# --- tests ----------------------------------------------------------------------------------------


def test_length_penalty_is_gnmt() -> None:
    assert gnmt_penalty(1, 0.6) == pytest.approx(1.0)
    assert gnmt_penalty(7, 0.0) == 1.0
    assert gnmt_penalty(13, 1.0) == pytest.approx(3.0)
    tensor = gnmt_penalty(torch.tensor([1, 13]), 1.0)
    assert torch.allclose(tensor, torch.tensor([1.0, 3.0]))


def test_cached_greedy_equals_full_recompute(model: Transformer, sources: list[Tensor]) -> None:
    src = pad(sources)
    assert_same(
        greedy_search(model, src, SearchSettings(length_penalty=0.6)),
        naive_greedy_search(model, src, SearchSettings(length_penalty=0.6)),
    )


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_size_one_is_greedy(model: Transformer, sources: list[Tensor], alpha: float) -> None:
    src = pad(sources)
    beams = beam_search(model, src, SearchSettings(length_penalty=alpha), beam_size=1)
    assert all(len(hypotheses) == 1 for hypotheses in beams)
    assert_same(
        [hypotheses[0] for hypotheses in beams],
        greedy_search(model, src, SearchSettings(length_penalty=alpha)),
    )


def test_beam_finds_scores_at_least_greedy(copy_model: Transformer) -> None:
    src = pad(random_sequences(48, torch.Generator().manual_seed(3), 3, 8))
    greedy = greedy_search(copy_model, src, SearchSettings(length_penalty=0.6))
    beams = beam_search(copy_model, src, SearchSettings(length_penalty=0.6), beam_size=5)
    for greedy_hypothesis, beam_hypotheses in zip(greedy, beams, strict=True):
        assert beam_hypotheses[0].score >= greedy_hypothesis.score - 1e-5


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_batched_equals_one_at_a_time(
    model: Transformer, sources: list[Tensor], search: str
) -> None:
    def run(src: Tensor) -> list[list[Hypothesis]]:
        if search == "greedy":
            return [[h] for h in greedy_search(model, src, SearchSettings(length_penalty=0.6))]
        return beam_search(model, src, SearchSettings(length_penalty=0.6), beam_size=4, nbest=4)

    batched = run(pad(sources))
    for source, hypotheses in zip(sources, batched, strict=True):
        assert_same(hypotheses, run(source[None])[0])


def test_checking_for_finished_sentences_less_often_changes_nothing(
    random_model: Transformer, sources: list[Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an accelerator finished sentences are only dropped every few steps; in between they
    must be carried along without effect. Simulate that on the CPU."""
    src = pad(sources)
    greedy = greedy_search(random_model, src, SearchSettings(length_penalty=0.6))
    beams = beam_search(random_model, src, beam_size=4, nbest=4)
    monkeypatch.setattr(decoding, "_steps_between_checks", lambda device: 3)
    assert_same(greedy_search(random_model, src, SearchSettings(length_penalty=0.6)), greedy)
    for a, b in zip(beam_search(random_model, src, beam_size=4, nbest=4), beams, strict=True):
        assert_same(a, b)


def test_nbest_lists_are_sorted_distinct_and_full(
    model: Transformer, sources: list[Tensor]
) -> None:
    for hypotheses in beam_search(
        model, pad(sources), SearchSettings(length_penalty=0.6), beam_size=5, nbest=4
    ):
        assert len(hypotheses) == 4
        scores = [h.score for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hypotheses}) == 4


def test_scores_are_the_models_log_probabilities(
    random_model: Transformer, sources: list[Tensor]
) -> None:
    """Every returned hypothesis carries its own tokens' log-probability (EOS included) and the
    length-penalised score: the beam's bookkeeping of tokens and scores stays in step."""
    beams = beam_search(
        random_model, pad(sources), SearchSettings(length_penalty=0.6), beam_size=3, nbest=3
    )
    for source, hypotheses in zip(sources, beams, strict=True):
        for h in hypotheses:
            assert EOS not in h.tokens and BOS not in h.tokens and PAD not in h.tokens
            assert h.log_prob == pytest.approx(
                teacher_forced_log_prob(random_model, source, h.tokens), abs=1e-4
            )
            assert h.score == pytest.approx(h.log_prob / gnmt_penalty(len(h.tokens) + 1, 0.6))


def test_trained_model_copies_with_greedy_and_beam(copy_model: Transformer) -> None:
    sequences = random_sequences(64, torch.Generator().manual_seed(4), 3, 8)
    src = pad(sequences)
    targets = [s.tolist() for s in sequences]
    greedy = [h.tokens for h in greedy_search(copy_model, src)]
    beam = [hypotheses[0].tokens for hypotheses in beam_search(copy_model, src, beam_size=5)]
    assert sum(g == t for g, t in zip(greedy, targets, strict=True)) >= 0.9 * len(targets)
    assert sum(b == t for b, t in zip(beam, targets, strict=True)) >= 0.9 * len(targets)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_translate_ids_keeps_order_and_handles_empty_sources(
    random_model: Transformer, sources: list[Tensor], beam_size: int
) -> None:
    # Lists and tensors mixed, empty ones among them; a small budget makes several batches.
    inputs: list = [s.tolist() for s in sources[:12]] + [[]] + sources[12:] + [torch.tensor([])]
    config = DecodeConfig(beam_size=beam_size, nbest=beam_size, batch_tokens=60)
    results = translate_ids(random_model, inputs, config, torch.device("cpu"))
    assert len(results) == len(inputs)
    for source, hypotheses in zip(inputs, results, strict=True):
        if len(source) == 0:
            assert hypotheses == [Hypothesis(tokens=[], score=0.0, log_prob=0.0)]
        else:
            alone = decode_batch(random_model, torch.as_tensor(source)[None], config)[0]
            assert_same(hypotheses, alone)


def test_empty_source_rows_are_rejected_by_the_searches(random_model: Transformer) -> None:
    src = torch.tensor([[5, 6, 7], [PAD, PAD, PAD]])
    with pytest.raises(ValueError, match="at least one token"):
        greedy_search(random_model, src)
    with pytest.raises(ValueError, match="at least one token"):
        beam_search(random_model, src)


@pytest.mark.parametrize(("a", "b"), [(0.5, 2), (0.0, 0), (10.0, 100)])
def test_output_length_limit(
    random_model: Transformer, sources: list[Tensor], a: float, b: int
) -> None:
    src = pad(sources)
    limits = max_output_lengths(src, a, b, PAD, random_model.config.max_positions).tolist()
    assert limits == [min(int(a * len(s) + b), 63) for s in sources]
    greedy = greedy_search(random_model, src, SearchSettings(max_len_a=a, max_len_b=b))
    beams = beam_search(
        random_model, src, replace(BEAM_DEFAULTS, max_len_a=a, max_len_b=b), beam_size=3, nbest=3
    )
    for limit, greedy_hypothesis, beam_hypotheses in zip(limits, greedy, beams, strict=True):
        assert len(greedy_hypothesis.tokens) <= limit
        assert all(len(h.tokens) <= limit for h in beam_hypotheses)
        assert beam_hypotheses  # forced to finish at the limit, never empty-handed
    # The untrained model rarely says EOS: some outputs must actually hit the limit.
    assert any(len(h.tokens) == limit for h, limit in zip(greedy, limits, strict=True))


def test_decode_batch_dispatches_on_beam_size(
    random_model: Transformer, sources: list[Tensor]
) -> None:
    src = pad(sources)
    greedy = decode_batch(random_model, src, DecodeConfig(beam_size=1, length_penalty=0.6))
    assert all(len(hypotheses) == 1 for hypotheses in greedy)
    assert_same(
        [h[0] for h in greedy], greedy_search(random_model, src, SearchSettings(length_penalty=0.6))
    )
    beams = decode_batch(random_model, src, DecodeConfig(beam_size=3, nbest=2, length_penalty=0.6))
    assert all(len(hypotheses) == 2 for hypotheses in beams)


# --- sampling -------------------------------------------------------------------------------------


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sampling_is_reproducible_with_a_seed_and_varies_without(
    random_model: Transformer, sources: list[Tensor]
) -> None:
    src = pad(sources)
    first = sample_search(random_model, src, nbest=3, generator=seeded(7), temperature=1.5)
    again = sample_search(random_model, src, nbest=3, generator=seeded(7), temperature=1.5)
    other = sample_search(random_model, src, nbest=3, generator=seeded(8), temperature=1.5)
    for a, b in zip(first, again, strict=True):
        assert_same(a, b)
    tokens = [[h.tokens for h in hypotheses] for hypotheses in first]
    assert tokens != [[h.tokens for h in hypotheses] for hypotheses in other]
    # The global RNG is left alone: seeding it does not change the draws.
    torch.manual_seed(123)
    for a, b in zip(first, sample_search(random_model, src, nbest=3, generator=seeded(7),
                                         temperature=1.5), strict=True):  # fmt: skip
        assert_same(a, b)


@pytest.mark.parametrize("restriction", [{"top_k": 1}, {"top_p": 1e-6}])
def test_sampling_restricted_to_the_best_token_is_greedy(
    model: Transformer, sources: list[Tensor], restriction: dict
) -> None:
    src = pad(sources)
    settings = SearchSettings(length_penalty=0.6)
    samples = sample_search(model, src, settings, nbest=2, generator=seeded(0), **restriction)
    greedy = greedy_search(model, src, SearchSettings(length_penalty=0.6))
    for hypotheses, best in zip(samples, greedy, strict=True):
        assert len(hypotheses) == 2
        assert_same(hypotheses, [best, best])


def test_samples_carry_their_model_log_probabilities(
    random_model: Transformer, sources: list[Tensor]
) -> None:
    """nbest draws per sentence, best score first, each scored with the model's own (untempered)
    log-probabilities, within the length limit, and never PAD, BOS or EOS inside."""
    src = pad(sources)
    settings = SearchSettings(length_penalty=0.6, max_len_a=0.5, max_len_b=3)
    samples = sample_search(
        random_model,
        src,
        settings,
        nbest=4,
        generator=seeded(1),
        temperature=2.0,
        top_k=8,
        top_p=0.9,
    )
    limits = max_output_lengths(src, 0.5, 3, PAD, random_model.config.max_positions).tolist()
    for source, limit, hypotheses in zip(sources, limits, samples, strict=True):
        assert len(hypotheses) == 4
        assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)
        for h in hypotheses:
            assert len(h.tokens) <= limit
            assert EOS not in h.tokens and BOS not in h.tokens and PAD not in h.tokens
            assert h.log_prob == pytest.approx(
                teacher_forced_log_prob(random_model, source, h.tokens), abs=1e-4
            )


def test_sampling_draws_from_the_model_distribution(random_model: Transformer) -> None:
    """The first token's empirical frequencies over many draws match the model's probabilities."""
    source = torch.tensor([[5, 6, 7, 8]])
    src = source.expand(400, -1)  # (400, S): one draw each
    settings = SearchSettings(max_len_a=0.0, max_len_b=1)
    draws = sample_search(random_model, src, settings, generator=seeded(3))
    first = [h[0].tokens[0] if h[0].tokens else EOS for h in draws]  # an empty output drew EOS
    counts = torch.bincount(torch.tensor(first), minlength=VOCAB)
    with torch.no_grad():
        log_probs = random_model(source, torch.tensor([[BOS]]))[0, 0].log_softmax(dim=-1)
    probs = log_probs.exp()
    probs[[PAD, BOS]] = 0.0  # never drawn
    probs /= probs.sum()
    assert (counts / 400.0 - probs).abs().max() < 0.08


# --- ensembles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("search", ["greedy", "beam", "sample"])
def test_ensemble_of_one_model_and_of_a_model_with_itself_equal_the_model(
    random_model: Transformer, sources: list[Tensor], search: str
) -> None:
    src = pad(sources)

    def run(models: Transformer | list[Transformer]) -> list[list[Hypothesis]]:
        if search == "greedy":
            return [[h] for h in greedy_search(models, src, SearchSettings(length_penalty=0.6))]
        if search == "beam":
            return beam_search(models, src, beam_size=3, nbest=3)
        return sample_search(models, src, nbest=2, generator=seeded(5), temperature=1.3)

    alone = run(random_model)
    for ensemble in ([random_model], [random_model, random_model]):
        for a, b in zip(run(ensemble), alone, strict=True):
            assert_same(a, b)


def test_ensemble_averages_the_probabilities(
    random_model: Transformer, copy_model: Transformer, sources: list[Tensor]
) -> None:
    src = pad(sources[:4])
    tokens = torch.full((4,), BOS)
    ensemble = EnsembleScorer([ModelScorer(m, src, 4) for m in (random_model, copy_model)])
    with torch.no_grad():
        mixed = ensemble(tokens)  # (4, V)
        p1 = random_model(src, tokens[:, None])[:, -1].softmax(dim=-1)
        p2 = copy_model(src, tokens[:, None])[:, -1].softmax(dim=-1)
    torch.testing.assert_close(mixed, ((p1 + p2) / 2).log(), atol=1e-5, rtol=1e-5)
    # Different models: the ensemble's output differs from at least one of them.
    both = greedy_search([random_model, copy_model], src)
    assert [h.tokens for h in both] != [h.tokens for h in greedy_search(random_model, src)] or [
        h.tokens for h in both
    ] != [h.tokens for h in greedy_search(copy_model, src)]


# --- forced target prefixes -----------------------------------------------------------------------


def prefixes_for(sources: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Random prefixes of 0 to 4 ordinary tokens, one per source."""
    return random_sequences(len(sources), generator, 0, 4)


@pytest.mark.parametrize("search", ["greedy", "beam", "sample"])
def test_outputs_start_with_their_prefix_and_are_scored_with_it(
    random_model: Transformer, sources: list[Tensor], search: str
) -> None:
    prefixes = prefixes_for(sources, seeded(11))
    src, forced = pad(sources), pad(prefixes)
    limits = dict(max_len_a=0.3, max_len_b=1)  # some prefixes are longer than the limit
    if search == "greedy":
        results = [
            [h] for h in greedy_search(random_model, src, SearchSettings(**limits), prefixes=forced)
        ]
    elif search == "beam":
        settings = replace(BEAM_DEFAULTS, **limits)
        results = beam_search(random_model, src, settings, beam_size=3, nbest=2, prefixes=forced)
    else:
        results = sample_search(
            random_model,
            src,
            SearchSettings(**limits),
            nbest=2,
            prefixes=forced,
            generator=seeded(2),
        )
    for source, prefix, hypotheses in zip(sources, prefixes, results, strict=True):
        assert hypotheses
        for h in hypotheses:
            assert h.tokens[: len(prefix)] == prefix.tolist()
            assert h.log_prob == pytest.approx(
                teacher_forced_log_prob(random_model, source, h.tokens), abs=1e-4
            )


def test_empty_prefixes_change_nothing(random_model: Transformer, sources: list[Tensor]) -> None:
    src = pad(sources)
    empty = torch.full((len(sources), 3), PAD)  # (B, 3): all padding
    assert_same(greedy_search(random_model, src, prefixes=empty), greedy_search(random_model, src))
    with_empty = beam_search(random_model, src, beam_size=3, nbest=3, prefixes=empty)
    for a, b in zip(with_empty, beam_search(random_model, src, beam_size=3, nbest=3), strict=True):
        assert_same(a, b)


def test_the_best_prefixed_beam_continues_like_the_beam_after_its_own_start(
    copy_model: Transformer,
) -> None:
    """Forcing the first tokens of the copy model's own output gives that output back."""
    sequences = random_sequences(16, seeded(12), 4, 8)
    src = pad(sequences)
    plain = [h[0].tokens for h in beam_search(copy_model, src, beam_size=4)]
    forced = pad([torch.tensor(tokens[:2]) for tokens in plain])
    prefixed = [h[0].tokens for h in beam_search(copy_model, src, beam_size=4, prefixes=forced)]
    assert prefixed == plain


@pytest.mark.parametrize("sample", [False, True])
def test_translate_ids_with_prefixes_and_sampling_equals_one_at_a_time(
    random_model: Transformer, sources: list[Tensor], sample: bool
) -> None:
    prefixes = prefixes_for(sources, seeded(13))
    config = DecodeConfig(beam_size=3, nbest=2, batch_tokens=60, sample=sample, top_k=1, seed=4)
    results = translate_ids(random_model, sources, config, torch.device("cpu"), prefixes=prefixes)
    for source, prefix, hypotheses in zip(sources, prefixes, results, strict=True):
        alone = translate_ids(
            random_model, [source], config, torch.device("cpu"), prefixes=[prefix]
        )
        assert_same(hypotheses, alone[0])
        assert all(h.tokens[: len(prefix)] == prefix.tolist() for h in hypotheses)
