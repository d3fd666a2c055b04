"""crate_edu.data.captions: captions from the generator's draws, held-out prompts and classes, tokens."""

from __future__ import annotations

import pytest
import torch

import crate_edu
from crate_edu.data import CaptionedDigits, CaptionTokenizer, caption_vocabulary, pair_classes
from crate_edu.data.captions import (
    BACKGROUND_WORDS,
    COLOUR_WORDS,
    DIGIT_WORDS,
    HELD_OUT_PAIRS,
    HELD_OUT_TEMPLATES,
    POSITION_WORDS,
    TRAIN_TEMPLATES,
    colour_names,
    position_names,
)
from crate_edu.data.synthetic import TEXTURE_SOURCES, ClutteredDigits


@pytest.fixture(scope="module")
def test_split():
    return CaptionedDigits("test", samples_per_digit=2)


def test_colour_names_of_known_colours():
    rgb = torch.tensor(
        [
            [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.8, 0.0], [0.0, 0.9, 0.9], [0.1, 0.1, 0.9],
            [0.9, 0.0, 0.9], [0.95, 0.95, 0.9], [0.5, 0.45, 0.5], [0.1, 0.05, 0.1], [1.0, 0.55, 0.0],
        ]
    )  # fmt: skip
    names = [COLOUR_WORDS[i] for i in colour_names(rgb)]
    # orange (hue 32°) is nearer yellow (60°) than red (0°)? No: 32° rounds to the 60° sixth only
    # from 30° on, so it is yellow; a colour at 25° would be red.
    assert names == ["red", "yellow", "green", "cyan", "blue", "magenta", "white", "grey", "black", "yellow"]
    assert COLOUR_WORDS[int(colour_names(torch.tensor([[1.0, 0.4, 0.0]]))[0])] == "red"  # 24°


def test_position_names_split_the_free_range_in_thirds():
    h = torch.full((5, 2), 0.8)  # a box 80 % of the image: its centre can move by ±0.2
    centre = torch.tensor([[0.0, 0.0], [-0.2, -0.2], [0.2, 0.2], [-0.1, 0.0], [0.0, 0.1]])
    names = [POSITION_WORDS[i] for i in position_names(centre, h)]
    assert names == ["centre", "top left", "bottom right", "left", "bottom"]


def test_attributes_describe_the_pixels(test_split):
    ds = test_split
    base = ClutteredDigits("test", samples_per_digit=2)
    assert torch.equal(ds.images, base.images) and torch.equal(ds.labels, base.labels)  # test keeps all
    # the recorded colour is the digit's: the mean colour under its mask (edges blended with the
    # background included) mostly has the same name; the commonest name alone would agree ~18 %
    m = base.masks[:, None].float()  # (N, 1, S, S)
    under = (base.images.float() / 255 * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1)  # (N, 3)
    agree = (colour_names(under) == ds.attributes.colour).float().mean()
    assert agree > 0.7, agree
    # the background word is the source the crop came from
    src = base.attributes.background
    assert [BACKGROUND_WORDS[i] for i in ds.attributes.background[:20]] == [
        BACKGROUND_WORDS[i] for i in src[:20]
    ]
    assert len(BACKGROUND_WORDS) == len(TEXTURE_SOURCES)
    # every attribute value occurs
    for values, words in [
        (ds.attributes.colour, COLOUR_WORDS),
        (ds.attributes.position, POSITION_WORDS),
        (ds.attributes.background, BACKGROUND_WORDS),
    ]:
        assert set(values.tolist()) == set(range(len(words)))


def test_captions_name_the_attributes(test_split):
    ds = test_split
    for i in range(50):
        words = ds.attributes.words(i)
        caption = ds.captions[i]
        template = TRAIN_TEMPLATES[int(ds.caption_templates[i])]
        assert caption == template.format(**words)
        assert words["digit"] == DIGIT_WORDS[int(ds.labels[i])]
        assert f" {words['digit']} " in f" {caption} "
    assert CaptionedDigits("test", samples_per_digit=2).captions == ds.captions  # seeded


def test_held_out_pairs_are_absent_from_training_only():
    train = CaptionedDigits("train", samples_per_digit=2)
    test = CaptionedDigits("test", samples_per_digit=2)

    def pairs(ds):
        return {(int(d), int(c)) for d, c in zip(ds.attributes.digit, ds.attributes.colour, strict=True)}

    assert not pairs(train) & HELD_OUT_PAIRS
    assert pairs(test) >= HELD_OUT_PAIRS and not train.held_out.any()
    assert 0.05 < float(test.held_out.float().mean()) < 0.2
    held = test.held_out
    assert all(
        (int(d), int(c)) in HELD_OUT_PAIRS
        for d, c in zip(test.attributes.digit[held], test.attributes.colour[held], strict=True)
    )
    kept = CaptionedDigits("train", samples_per_digit=2, keep_held_out=True)
    assert len(kept) == len(ClutteredDigits("train", samples_per_digit=2)) > len(train)
    # each digit has one held-out colour; pair classes index as 9 d + c
    assert sorted(d for d, _ in HELD_OUT_PAIRS) == list(range(10))
    names = pair_classes()
    assert len(names) == 90 and names[9 * 7 + 2] == "green seven"
    assert torch.equal(test.pair_labels, test.attributes.digit * 9 + test.attributes.colour)


def test_held_out_templates_are_new_sentences_of_known_words():
    train_words = {w for t in TRAIN_TEMPLATES for w in t.split() if not w.startswith("{")}
    for t in HELD_OUT_TEMPLATES:
        assert t.count("{}") == 1
        assert t not in TRAIN_TEMPLATES
        assert {w for w in t.split() if w != "{}"} <= train_words, t
        for train_template in TRAIN_TEMPLATES:  # no prompt is a training caption with slots dropped
            assert t.replace("{}", "{digit}") != train_template


def test_tokenizer_pads_truncates_and_decodes():
    tok = CaptionTokenizer(8)
    vocab = caption_vocabulary()
    assert vocab[:2] == ("[PAD]", "[START]") and tok.vocab_size == len(vocab) == len(set(vocab))
    ids = tok(["a red seven on brick", "the digit seven in red at the top left"])
    assert ids.dtype == torch.int64 and ids.shape == (2, 8)
    assert ids[0, 0] == 1 and ids[0, 6:].tolist() == [0, 0] and (ids[0, 1:6] > 1).all()
    assert ids[1].ne(0).all()  # 10 tokens cut to 8: the start token kept
    assert tok.decode(ids[0]) == "a red seven on brick"
    assert tok.decode(ids[1]) == "the digit seven in red at the"
    assert tok("A  Red seven", context_length=4).tolist() == [
        [1, vocab.index("a"), vocab.index("red"), vocab.index("seven")]
    ]
    with pytest.raises(ValueError, match="unknown word 'purple'") as e:
        tok("a purple seven")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown word"):
        tok("[PAD] seven")
    with pytest.raises(ValueError, match="context_length"):
        CaptionTokenizer(1)
    with pytest.raises(TypeError, match="str"):
        tok([3])


def test_every_caption_and_prompt_tokenizes_within_the_preset_context(test_split):
    cfg = crate_edu.models.model_config("crate_alpha_clipa_digits")
    tok = CaptionTokenizer(cfg.context_length)
    assert cfg.vocab_size == tok.vocab_size  # the preset's vocabulary is the captions'
    longest = max(
        len(tok.encode(test_split.caption(i, t))) for i in range(30) for t in range(len(TRAIN_TEMPLATES))
    )
    assert longest <= cfg.context_length
    prompts = [t.format(n) for t in HELD_OUT_TEMPLATES for n in pair_classes()]
    assert max(len(tok.encode(p)) for p in prompts) <= 8  # they fit the low-resolution phase's context
