"""The prompt box of the unCLIP notebook: type a caption, press Draw, see the pictures.

Two layers, so the logic is tested without a browser:

* pure functions — `prompt_warning` (what a prompt lacks to be one of the caption patterns the
  model was trained on; the patterns themselves are checked by `data.attributes.parse_caption`,
  the same check ``dalle-mini generate`` uses) and `draw_prompt` (one update of the box: the
  warning, the figure or the error, and the seconds it took);
* `PromptBox`, a thin ipywidgets front end: a text box that does *not* generate while you type
  (``continuous_update=False``), two guidance sliders, a seed, a **Draw** button, a status line
  that says when it is drawing and how long the last picture took, and the picture. The picture
  is an ordinary display output (a PNG updated in place through a display handle), so a saved
  notebook shows it on GitHub or in any viewer without a kernel.

The box samples with few steps (`FAST_STEPS`) so that an update takes about a second or two on a
laptop CPU; the course's other cells use the pipeline's defaults (`defaults.GENERATE_DEFAULTS`).
"""
from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from .data.attributes import (
    COLOURS,
    ONE_OBJECT_TEMPLATES,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    TWO_OBJECT_TEMPLATES,
    parse_caption,
)
from .defaults import GENERATE_DEFAULTS

__all__ = ["FAST_STEPS", "prompt_warning", "PromptResult", "draw_prompt", "PromptBox"]

#: Sampling steps of the interactive box, fewer than `GENERATE_DEFAULTS` (prior 10, decoder 10,
#: upsampler 5) so that a press of Draw answers sooner; other settings are the defaults'. Chosen from
#: the CPU sampler sweep (data/weights/reports/sweep_samplers_cpu.json, 16 seen + 16 held-out
#: prompts): the decoder's DDIM η = 1 at 8 steps was clean in 32 of 32 pictures and read right in
#: all of them, like 10 steps. The price of the quick preview, measured since on the whole pipeline
#: (compare_decoder8_cpu_54.json, 54 seen + 54 held-out prompts, decoder 8 and the defaults' other
#: steps, in one run with the defaults): clean 91.7% at 64×64 against 98.1%, held-out caption
#: accuracy 88.9% against 92.6%, for 0.80× the decoder's time -- so the defaults keep 10. The
#: prior's DPM-Solver++(2M) at 5 steps gives embeddings with mean cosine 0.996 (lowest 0.972 of 32)
#: to DDIM's 50-step ones from the same noise, 0.9996 at 10 (upsampler_dpmpp_study_cpu.json).
#: `benchmarks/bench_promptbox.py` measures the box's seconds per update; notebook 10 prints it on
#: the student's machine.
FAST_STEPS: dict[str, int] = {
    "prior_steps": min(5, GENERATE_DEFAULTS["prior_steps"]),
    "decoder_steps": min(8, GENERATE_DEFAULTS["decoder_steps"]),
    "upsampler_steps": min(5, GENERATE_DEFAULTS["upsampler_steps"]),
}

_KINDS = (("size", tuple(SIZES)), ("colour", tuple(COLOURS)), ("shape", SHAPES), ("position", POSITIONS))
_TEMPLATE_WORDS = {w for t in ONE_OBJECT_TEMPLATES + TWO_OBJECT_TEMPLATES
                   for w in re.sub(r"\{[a-z]+\d\}|[,:]", " ", t).split()}
_KNOWN_WORDS = _TEMPLATE_WORDS | {w for _, words in _KINDS for phrase in words for w in phrase.split()} | {
    w for r in RELATIONS for w in r.split()}


def _found(words: tuple[str, ...], text: str) -> list[str]:
    """The vocabulary entries (one or two words) that occur in `text`, longest first, no overlaps."""
    hits = []
    for entry in sorted(words, key=len, reverse=True):
        if re.search(rf"\b{re.escape(entry)}\b", text):
            hits.append(entry)
            text = re.sub(rf"\b{re.escape(entry)}\b", " ", text)
    return hits


def prompt_warning(prompt: str) -> str | None:
    """None when `prompt` is one of the training captions' patterns, else what it lacks, in words.

    The model was trained on captions of a few fixed patterns (`ONE_OBJECT_TEMPLATES`,
    `TWO_OBJECT_TEMPLATES`): every one-object caption names a size, a colour, a shape and a
    position, e.g. "a small red circle at the top left". Any text still generates (CLIP reads
    it), but the picture is then a guess. The message names the missing kinds of word, the words
    the model never saw, and a caption of the right pattern built from the prompt's own words.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    try:
        parse_caption(prompt)
        return None
    except ValueError:
        pass
    text = " ".join(prompt.lower().replace(",", " ").replace(":", " ").split()).removesuffix(".")
    if not text:
        return "the prompt is empty: write what the picture should show, e.g. 'a small red circle at the top left'"
    unknown = [w for w in dict.fromkeys(re.findall(r"[a-z']+", text)) if w not in _KNOWN_WORDS]
    relation = _found(RELATIONS, text)
    text_wo_relation = re.sub("|".join(rf"\b{re.escape(r)}\b" for r in relation), " ", text) if relation else text
    found = {kind: _found(words, text_wo_relation) for kind, words in _KINDS}
    parts = []
    if relation or any(len(v) > 1 for k, v in found.items() if k != "position"):
        parts.append("two-object captions read 'a red circle left of a blue square' "
                     "(or with sizes: 'a small red circle left of a large blue square')")
    else:
        names = {"size": "a size (small, large)", "colour": "a colour (" + ", ".join(COLOURS) + ")",
                 "shape": "a shape (" + ", ".join(SHAPES) + ")",
                 "position": "a position (top left, top, …, centre, …, bottom right)"}
        missing = [names[kind] for kind, _ in _KINDS if not found[kind]]
        if missing:
            parts.append("it is missing " + (", ".join(missing[:-1]) + " and " if len(missing) > 1 else "") + missing[-1])
        defaults = {"size": "small", "colour": "red", "shape": "circle", "position": "top left"}
        words = {kind: found[kind][0] if found[kind] else defaults[kind] for kind in defaults}
        parts.append("try 'a {size} {colour} {shape} at the {position}'".format(**words))
    if unknown:
        parts.insert(0, "the model never saw the word" + ("s " if len(unknown) > 1 else " ")
                     + ", ".join(f"'{w}'" for w in unknown))
    return ("not one of the training captions' patterns (every one-object caption needs a size, a colour, "
            "a shape and a position): " + "; ".join(parts))


@dataclass
class PromptResult:
    """One update of the prompt box."""

    figure: Any  # the matplotlib figure drawn, None when the prompt was refused
    warning: str | None  # `prompt_warning` of the prompt (the picture is still drawn)
    error: str | None  # why nothing was drawn (an empty or over-long prompt, a bad setting)
    seconds: float  # wall time of the update

    @property
    def status(self) -> str:
        """The one-line status the box shows after the update."""
        if self.error is not None:
            return f"Not drawn: {self.error}"
        return f"Drawn in {self.seconds:.1f} s."


def draw_prompt(pipeline: Any, prompt: str, prior_guidance: float = GENERATE_DEFAULTS["prior_guidance"],
                decoder_guidance: float = GENERATE_DEFAULTS["decoder_guidance"], seed: int = 0, *,
                n: int = 4, steps: dict[str, int] | None = None, show: Callable[..., Any] | None = None,
                ) -> PromptResult:
    """Draw `n` pictures of `prompt` (the decoder's low-res row above the upsampled one).

    `steps` defaults to `FAST_STEPS`; `show` is the figure maker (default `viz.show_generation`).
    A ValueError from the pipeline (an empty or too long prompt, a negative guidance) becomes
    `PromptResult.error` instead of a traceback. Nothing here touches widgets.
    """
    if show is None:
        from .viz import show_generation as show
    t0 = time.perf_counter()
    warning = prompt_warning(prompt) if isinstance(prompt, str) else None
    try:
        figure = show(pipeline, prompt, prior_guidance, decoder_guidance, seed, n=n, **(FAST_STEPS if steps is None else steps))
    except ValueError as err:
        return PromptResult(None, warning, str(err), time.perf_counter() - t0)
    return PromptResult(figure, warning, None, time.perf_counter() - t0)


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    plt.close(figure)
    return buffer.getvalue()


class PromptBox:
    """The widget: prompt, guidance sliders, seed, a Draw button, a status line, the picture.

    ``PromptBox(pipe).display()`` shows the controls and draws the starting prompt once, as a
    plain picture output (what a saved notebook shows without a kernel). Each press of Draw (or
    Enter in the text box) redraws it in place; typing alone only updates the warning.
    """

    def __init__(self, pipeline: Any, prompt: str = "a large purple triangle at the top", *,
                 prior_guidance: float = GENERATE_DEFAULTS["prior_guidance"],
                 decoder_guidance: float = GENERATE_DEFAULTS["decoder_guidance"], seed: int = 0, n: int = 4,
                 steps: dict[str, int] | None = None) -> None:
        import ipywidgets as w

        self.pipeline, self.n, self.steps = pipeline, n, dict(FAST_STEPS if steps is None else steps)
        self.text = w.Text(value=prompt, description="prompt", continuous_update=False,
                           layout=w.Layout(width="32em"))
        self.prior = w.FloatSlider(value=prior_guidance, min=0.0, max=6.0, step=0.5, description="prior s")
        self.decoder = w.FloatSlider(value=decoder_guidance, min=0.0, max=8.0, step=0.5, description="decoder s")
        self.seed = w.BoundedIntText(value=seed, min=0, max=10_000, description="seed", layout=w.Layout(width="12em"))
        self.button = w.Button(description="Draw", button_style="primary", icon="paint-brush")
        self.status = w.Label(value="")
        self.warning = w.HTML(value="")
        self.last: PromptResult | None = None
        self.png: bytes = b""  # the last picture drawn, PNG
        self._handle = None
        self.button.on_click(lambda _: self.draw())
        self.text.observe(self._on_text, names="value")  # fires on Enter or leaving the box, not per key
        self._show_warning(prompt_warning(prompt))

    @property
    def controls(self):
        import ipywidgets as w

        return w.VBox([w.HBox([self.text, self.button]), w.HBox([self.prior, self.decoder, self.seed]),
                       self.status, self.warning])

    def describe(self) -> str:
        """One line for viewers without widgets (a saved notebook on GitHub): the box's settings."""
        return (f"[prompt box: {self.text.value!r} · prior s {self.prior.value} · decoder s {self.decoder.value} · "
                f"seed {self.seed.value} · Draw — run the notebook to use it; the picture below is its first drawing]")

    def _show_warning(self, message: str | None) -> None:
        import html

        self.warning.value = "" if message is None else f"<span style='color:#b35900'>⚠ {html.escape(message)}</span>"

    def _on_text(self, change: dict) -> None:
        self._show_warning(prompt_warning(change["new"]))
        self.draw()

    def draw(self) -> PromptResult:
        """One update: status 'Drawing…', the pictures (or why not), status with the seconds."""
        from IPython.display import Image

        self.button.disabled = True
        steps = ", ".join(f"{k.removesuffix('_steps')} {v}" for k, v in self.steps.items())
        self.status.value = f"Drawing {self.n} pictures ({steps} steps)…"
        try:
            result = draw_prompt(self.pipeline, self.text.value, self.prior.value, self.decoder.value,
                                 int(self.seed.value), n=self.n, steps=self.steps)
        finally:
            self.button.disabled = False
        self.last = result
        self._show_warning(result.warning)
        self.status.value = result.status
        if result.figure is not None:
            self.png = _png(result.figure)
            if self._handle is not None:
                self._handle.update(Image(data=self.png))
        return result

    def display(self) -> PromptResult:
        """Show the controls, then draw the starting prompt as a plain (saved, kernel-free) picture."""
        from IPython.display import Image, display

        controls = self.controls
        bundle = controls._repr_mimebundle_() if hasattr(controls, "_repr_mimebundle_") else None
        if isinstance(bundle, dict) and bundle:  # a live kernel: the widget, with a readable text stand-in
            bundle = dict(bundle, **{"text/plain": self.describe()})
            display(bundle, raw=True)
        else:
            display(controls)
        result = self.draw()
        self._handle = display(Image(data=self.png) if self.png else "", display_id=True)
        return result
