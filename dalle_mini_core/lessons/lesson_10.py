"""Lesson 10 (unCLIP end to end): exercise references, cases and plausible wrong answers.

Five exercises: the mirrored caption of a two-object scene (implement), unCLIP's best-of-n
reranking (implement), a slerp written for unit vectors and then used on noises (find the bug),
and two predictions: what the interpolation's middle frames show, and whether CLIP can tell
"left of" from "right of" on real pictures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dalle_mini_core.data.attributes import parse_caption
from dalle_mini_core.exercises import Exercise, exercise, register
from dalle_mini_core.latents import slerp as _slerp
from dalle_mini_core.prior import rerank

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


# --- 1. implement: the same scene, described from the other side -------------------------------

def _describe(obj: dict) -> str:
    words = [obj[k] for k in ("size", "colour", "shape") if k in obj]
    return "a " + " ".join(words)


@exercise("10.mirror", "implement", "mirror",
          hint="name the second object first, and turn the relation round (left of ↔ right of, above ↔ below); "
               "parse_caption(prompt) gives you the objects and the relation",
          cases=lambda: [("a red circle left of a blue square",), ("a green triangle above a black circle",),
                         ("a purple square right of a yellow triangle",)],
          wrong=(("objects swapped, relation kept", lambda p: _swap_only(p)),
                 ("relation reversed, objects kept", lambda p: _reverse_only(p)),
                 ("only the colours swapped", lambda p: _colours_only(p))))
def mirror(prompt: str) -> str:
    parsed = parse_caption(prompt)
    o0, o1 = parsed.objects
    return f"{_describe(o1)} {OPPOSITE[parsed.relation]} {_describe(o0)}"


def _swap_only(prompt: str) -> str:
    parsed = parse_caption(prompt)
    o0, o1 = parsed.objects
    return f"{_describe(o1)} {parsed.relation} {_describe(o0)}"


def _reverse_only(prompt: str) -> str:
    parsed = parse_caption(prompt)
    o0, o1 = parsed.objects
    return f"{_describe(o0)} {OPPOSITE[parsed.relation]} {_describe(o1)}"


def _colours_only(prompt: str) -> str:
    parsed = parse_caption(prompt)
    o0, o1 = parsed.objects
    return f"a {o1['colour']} {o0['shape']} {parsed.relation} a {o0['colour']} {o1['shape']}"


# --- 2. implement: best of n --------------------------------------------------------------------

def _best_of_cases():
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([0.5, 3.0, 1.0, 2.0])[None, :, None]  # candidates of different lengths: cosine ≠ dot product
    # a short candidate pointing along z_t against a long one pointing 53° away: cosine keeps the first
    e1, e2 = torch.eye(3)[0], torch.eye(3)[1]
    plain = (torch.stack([torch.stack([0.9 * e1, 3.0 * (0.6 * e1 + 0.8 * e2)])]), e1[None])
    return [plain,
            (torch.randn(3, 4, 6, generator=g) * lengths, F.normalize(torch.randn(3, 6, generator=g), dim=-1)),
            (torch.randn(2, 2, 8, generator=g), F.normalize(torch.randn(2, 8, generator=g), dim=-1))]


def _best_by_dot(candidates, text_emb):  # the dot product prefers LONG candidates
    scores = (candidates * text_emb[:, None, :]).sum(-1)
    return candidates[torch.arange(len(candidates)), scores.argmax(1)]


def _best_worst(candidates, text_emb):  # argmin
    scores = F.cosine_similarity(candidates, text_emb[:, None, :], dim=-1)
    return candidates[torch.arange(len(candidates)), scores.argmin(1)]


def _best_first(candidates, text_emb):  # no reranking: the first draw
    return candidates[:, 0]


@exercise("10.best_of", "implement", "best_of",
          hint="score every candidate by its COSINE similarity to its own caption's z_t (row b of candidates with "
               "row b of text_emb), then keep, per caption, the candidate with the highest score (the paper ranks "
               "by dot product, §2.2; for candidates of different lengths this exercise asks for the cosine)",
          cases=_best_of_cases,
          wrong=(("dot product (the paper's ranking, §2.2) where this exercise asks for the cosine", _best_by_dot),
                 ("the lowest score kept", _best_worst),
                 ("no reranking (first candidate)", _best_first)))
def best_of(candidates: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    return rerank(candidates, text_emb)[0]


# --- 3. find the bug: a slerp for unit vectors, used on noises ---------------------------------

def buggy_slerp(a: torch.Tensor, b: torch.Tensor, theta: float) -> torch.Tensor:
    """The notebook's slerp of section 7, written for unit vectors (cos Ω = a · b)."""
    omega = torch.arccos((a * b).sum(-1, keepdim=True).clamp(-1, 1))
    return (torch.sin((1 - theta) * omega) * a + torch.sin(theta * omega) * b) / torch.sin(omega)


def _slerp_cases():
    g = torch.Generator().manual_seed(0)
    noise = [torch.randn(64, generator=g, dtype=torch.float64) for _ in range(4)]  # like x_T: norm about 8, not 1
    return [(noise[0], noise[1], 0.3), (noise[2], noise[3], 0.5),
            (noise[0] * 0.1, noise[1] * 0.1, 0.7)]  # short vectors too


def _slerp_of_directions(a, b, theta):  # fixes the angle but returns unit vectors: the noise loses its size
    return buggy_slerp(F.normalize(a, dim=-1), F.normalize(b, dim=-1), theta)


def _lerp(a, b, theta):
    return (1 - theta) * a + theta * b


@exercise("10.slerp_noise", "find the bug", "slerp for noises",
          hint="the angle Ω between two vectors depends on their directions only: compute cos Ω from the "
               "normalised vectors, but mix the original vectors, so their length is kept",
          cases=_slerp_cases,
          buggy=buggy_slerp,
          wrong=(("angle right, but unit vectors returned", _slerp_of_directions),
                 ("a straight line (lerp)", _lerp)))
def slerp_noise(a: torch.Tensor, b: torch.Tensor, theta: float) -> torch.Tensor:
    return _slerp(a, b, theta)


# --- 4. predict, then measure: the interpolation's middle frames -------------------------------

MIDPOINT_OPTIONS = {
    "a": "something in between: an object in a cell other than the two ends' (the centre, say), in a colour other "
         "than red and blue (purple, say) or of another shape (a triangle)",
    "b": "one object at a time, always red or blue, always a circle or a square, always at the left or the right: it "
         "jumps instead of gliding (a mix of the ends' attributes, like a blue circle at the right, counts here)",
    "c": "both objects at once, a double exposure of the two ends",
    "d": "no recognisable object",
}


def _triples(frame) -> list[tuple[str, str, str]]:
    out = []
    for obj in frame:
        if isinstance(obj, dict):
            out.append((obj["colour"], obj["shape"], obj["position"]))
        elif isinstance(obj, (tuple, list)):
            out.append(tuple(obj))
        else:
            out.append((obj.colour, obj.shape, obj.position))
    return out


def judge_midpoint(measured) -> tuple[str, str]:
    """`measured`: for each middle frame (θ strictly between 0 and 1), the objects the reader finds,
    as (colour, shape, position) triples (or the reader's ShapeObjects)."""
    frames = [_triples(f) for f in measured]
    if not frames:
        raise ValueError("no middle frames were measured")
    seen = "; ".join(", ".join(" ".join(o) for o in f) or "nothing" for f in frames)
    facts = f"The reader finds, frame by frame: {seen}."
    if any(len(f) >= 2 for f in frames):
        return "c", facts + " Some frame holds two objects: the decoder drew both ends at once."
    if any(len(f) == 0 for f in frames):
        return "d", facts + (" Some frame has nothing the reader can name: between two embeddings the decoder met "
                             "a vector unlike its training data (or, in smoke mode, nothing is trained).")
    if any(pos not in ("left", "right") or colour not in ("red", "blue") or shape not in ("circle", "square")
           for f in frames for colour, shape, pos in f):
        return "a", facts + (" Something in between appeared: a colour other than red and blue, a shape other than "
                             "circle and square, or a cell other than the left and the right, drawn as one of the "
                             "things the decoder knows.")
    return "b", facts + (" Every middle frame is one object whose colour (red or blue), shape (circle or square) "
                         "and cell (left or right) each come from one of the two ends, possibly mixed: the shapes "
                         "world is discrete, so the decoder draws the nearest thing it knows, and the picture jumps "
                         "where the embedding glides.")


register(Exercise(
    name="10.midpoint", kind="predict", title="the interpolation's middle frames",
    hint="the decoder learned to draw 3 shapes, 6 colours, 9 cells: what can it draw for an embedding between two?",
    options=MIDPOINT_OPTIONS, judge=judge_midpoint,
    wrong=(("in between (measured: jumps, one frame mixing the ends: a blue circle)", ("a", [[("red", "circle", "left")], [("red", "circle", "left")],
                                              [("blue", "circle", "right")], [("blue", "square", "right")]])),
           ("double exposure (measured: jumps)", ("c", [[("red", "circle", "left")], [("blue", "square", "right")]])),
           ("jumps (measured: purple at the centre)", ("b", [[("purple", "circle", "centre")]]))),
))


# --- 5. predict, then measure: does CLIP see the relation? -------------------------------------

RELATION_OPTIONS = {
    "a": "well above chance (0.75 or more), like colours: the words' order reaches the embedding",
    "b": "near chance (between 0.35 and 0.75): the embedding hardly says which object is on which side",
    "c": "below 0.35: CLIP systematically prefers the reversed relation",
}


def judge_relation(measured) -> tuple[str, str]:
    """`measured` = the share of real two-object scenes where CLIP prefers the true caption over the
    relation-reversed one (a float in [0, 1])."""
    share = float(measured)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a share must lie in [0, 1], got {share}")
    facts = f"Measured: CLIP prefers the true relation for {share:.2f} of the real scenes (0.5 = chance)."
    if share >= 0.75:
        return "a", facts + " This CLIP does read the relation from the caption's word order."
    if share <= 0.35:
        return "c", facts + " A systematic reversal: the embedding holds the relation, the wrong way round."
    return "b", (facts + " CLIP's contrastive training rarely needs the relation to pick the right caption out of a "
                 "batch (the colours and shapes already do it), so it never learned to encode it (large CLIPs show the "
                 "same 'bag of words' habit: Yuksekgonul et al. 2023): the image "
                 "embedding does not say which object is on which side, and no decoder can draw what the embedding "
                 "does not hold.")


register(Exercise(
    name="10.relation_blind", kind="predict", title="CLIP and 'left of'",
    hint="what, in CLIP's training objective, would ever force it to encode which object is on which side?",
    options=RELATION_OPTIONS, judge=judge_relation,
    wrong=(("well above chance (measured 0.50)", ("a", 0.50)),
           ("reversed (measured 0.50)", ("c", 0.50)),
           ("near chance (measured 0.96)", ("b", 0.96))),
))
