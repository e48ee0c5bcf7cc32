"""promptbox.py: the unCLIP notebook's prompt box (warning, one update, the widget's wiring)."""
from __future__ import annotations

import pytest
import torch

from dalle_mini_core import promptbox
from dalle_mini_core.data.attributes import ONE_OBJECT_TEMPLATES, TWO_OBJECT_TEMPLATES, caption
from dalle_mini_core.data.shapes import ShapesDataset
from dalle_mini_core.defaults import GENERATE_DEFAULTS
from dalle_mini_core.pipeline import Generation


class FakePipeline:
    """Records generate's arguments and returns grey pictures; raises like UnCLIP on an empty prompt."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, *, n_per_prompt, seed, **kwargs):
        self.calls.append(dict(prompts=prompts, n_per_prompt=n_per_prompt, seed=seed, **kwargs))
        if not prompts[0].strip():
            raise ValueError("a prompt is empty; write what the image should show")
        n = n_per_prompt * len(prompts)
        return Generation(images=torch.zeros(n, 3, 64, 64), low_res=torch.zeros(n, 3, 32, 32),
                          image_emb=torch.zeros(n, 8), text_emb=torch.zeros(n, 8), prompts=list(prompts) * n_per_prompt)


def test_training_captions_get_no_warning():
    data = ShapesDataset("train", length=40, num_objects=(1, 2), seed=0)
    for i in range(len(data)):
        assert promptbox.prompt_warning(data[i][1]) is None, data[i][1]
    assert len(ONE_OBJECT_TEMPLATES) + len(TWO_OBJECT_TEMPLATES) > 1  # the check covers every pattern kind
    assert promptbox.prompt_warning("  A Small Red Circle at the top LEFT. ") is None


@pytest.mark.parametrize("prompt, missing, absent", [
    ("a yellow circle", ("a size", "a position"), ("a colour", "a shape")),
    ("a purple triangle at the top right", ("a size",), ("a position", "a colour", "a shape")),
    ("a large circle at the centre", ("a colour",), ("a size", "a position", "a shape")),
    ("a small red thing at the top", ("a shape",), ("a size", "a colour", "a position")),
])
def test_warning_names_what_a_one_object_caption_lacks(prompt, missing, absent):
    message = promptbox.prompt_warning(prompt)
    assert message is not None and "needs a size, a colour, a shape and a position" in message
    for kind in missing:
        assert f"{kind} (" in message
    for kind in absent:
        assert f"{kind} (" not in message


def test_warning_suggests_a_valid_caption_from_the_prompts_own_words():
    message = promptbox.prompt_warning("a purple triangle in the top right")
    suggestion = message.split("try '")[1].split("'")[0]
    assert suggestion == "a small purple triangle at the top right"
    assert promptbox.prompt_warning(suggestion) is None
    assert "'in'" in message  # a word the captions never use


def test_warning_lists_unknown_words_and_two_object_form():
    message = promptbox.prompt_warning("a big red circle in the middle")
    assert "'big'" in message and "'middle'" in message and "'red'" not in message
    message = promptbox.prompt_warning("a red circle left of a blue squre")
    assert "'squre'" in message and "two-object captions" in message
    assert "empty" in promptbox.prompt_warning("   ")
    with pytest.raises(TypeError):
        promptbox.prompt_warning(None)


def test_fast_steps_are_the_generate_keys_and_no_slower_than_the_defaults():
    assert set(promptbox.FAST_STEPS) <= set(GENERATE_DEFAULTS)
    for key, value in promptbox.FAST_STEPS.items():
        assert 1 <= value <= GENERATE_DEFAULTS[key]


def test_draw_prompt_uses_the_fast_steps_and_reports_warning_and_time():
    pipe = FakePipeline()
    result = promptbox.draw_prompt(pipe, "a yellow circle", 1.5, 2.5, 7, n=2)
    call = pipe.calls[-1]
    assert call["prompts"] == ["a yellow circle"] and call["n_per_prompt"] == 2 and call["seed"] == 7
    assert call["prior_guidance"] == 1.5 and call["decoder_guidance"] == 2.5
    for key, value in promptbox.FAST_STEPS.items():
        assert call[key] == value
    assert result.figure is not None and result.error is None and result.seconds >= 0
    assert "a size" in result.warning and result.status.startswith("Drawn in ")
    # two rows (decoder 32×32, upsampled 64×64) of two pictures
    assert len(result.figure.axes) == 4


def test_draw_prompt_turns_a_refused_prompt_into_a_message():
    pipe = FakePipeline()
    result = promptbox.draw_prompt(pipe, "", steps={"decoder_steps": 3})
    assert result.figure is None and "empty" in result.error and result.status.startswith("Not drawn: ")
    assert pipe.calls[-1]["decoder_steps"] == 3 and "prior_steps" not in pipe.calls[-1]


def test_prompt_box_draws_only_on_draw_or_enter(monkeypatch):
    pytest.importorskip("ipywidgets")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: shown.append(a) or _Handle())
    pipe = FakePipeline()
    box = promptbox.PromptBox(pipe, "a yellow circle", n=1)
    assert box.text.continuous_update is False  # typing does not send the value, so nothing draws per key
    assert pipe.calls == [] and "a size" in box.warning.value
    box.display()  # controls, then the starting picture as a plain output
    assert len(pipe.calls) == 1 and len(shown) == 2 and box.png.startswith(b"\x89PNG")
    assert shown[0][0]["text/plain"].startswith("[prompt box: 'a yellow circle'")  # what a viewer without widgets shows
    assert box.status.value.startswith("Drawn in ")
    box.button.click()
    assert len(pipe.calls) == 2
    box.text.value = "a small yellow circle at the top left"  # what Enter does
    assert len(pipe.calls) == 3 and box.warning.value == ""
    box.text.value = ""
    assert box.status.value.startswith("Not drawn: ") and not box.button.disabled


class _Handle:
    def update(self, obj):
        pass
