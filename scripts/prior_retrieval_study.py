"""Does the shipped shapes prior beat the text embedding on retrieval? And could any prior? Side by side.

    python scripts/prior_retrieval_study.py [--galleries 5] [--oracle-draws 8] [--json FILE]

For each gallery g (held-out test scenes with seed 100 + g, the first 200 distinct captions),
every method predicts an image embedding per caption and is scored by strict top-1 retrieval
among the 200 true image embeddings, by relevance-aware top-1 (any scene the caption describes
counts) and by cosine to the true embedding (`evaluation.prior.retrieval_top1`, `evaluation.prior.cosine_to_true`):

* the text embedding z_t itself, and the prior's mean (one denoising step from noise);
* prior samples at guidance none / 2 / 4 and best of 2 at guidance 2 (64 DDIM steps);
* prior samples at guidance 2 with 16 and 250 steps (does the sampler's step count matter?);
* a *perfect prior*: the CLIP image embedding of a fresh scene that the caption describes
  (`evaluation.clip.shapes_oracle_embeddings`: what the caption states is kept, the rest drawn anew), one
  draw scored at a time and averaged over `--oracle-draws` draws ("oracle sample"), and the
  mean of those draws ("oracle mean", the centre of the caption's images);
* prior samples at guidance 2 scored the same way over as many draws, for a like-for-like
  comparison with the oracle.

Each score is also split by kind of caption (`evaluation.clip.shapes_caption_kind`): captions that state
every attribute, and relation captions ("a red circle left of a blue square"), which leave the
cells (and sometimes the sizes) open. It also splits each method's error z_pred − z_true into
the part shared by all captions and the caption-specific rest. Prints means over galleries;
notebook 07 and the issue notes quote this script's output.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.nn.functional as F

    from dalle_mini_core.data.shapes import ShapesDataset
    from dalle_mini_core.evaluation.clip import shapes_caption_kind, shapes_oracle_embeddings, shapes_relevance
    from dalle_mini_core.evaluation.prior import _distinct_rows, cosine_to_true, embed_dataset, retrieval_hits
    from dalle_mini_core.evaluation.report import load_stage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--galleries", type=int, default=5)
    ap.add_argument("--n", type=int, default=200, help="captions per gallery")
    ap.add_argument("--oracle-draws", type=int, default=8, help="fresh scenes (and prior samples) per caption")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    clip, prior = load_stage("shapes", "clip"), load_stage("shapes", "prior")
    if clip is None or prior is None:
        raise SystemExit("needs the shipped shapes_clip and shapes_prior in data/weights")
    K = args.oracle_draws
    rows_out: dict[str, list[dict[str, float]]] = {}
    kinds_out: dict[str, dict[str, list[tuple[float, float]]]] = {}  # kind → method → [(strict, relevant) per caption]
    for gal in range(args.galleries):
        t0 = time.perf_counter()
        test = ShapesDataset("test", length=1000, image_size=32, seed=100 + gal)
        emb = embed_dataset(clip, test, len(test))
        rows = _distinct_rows(emb["tokens"], args.n)
        captions = [emb["caption"][int(i)] for i in rows]
        kinds = [shapes_caption_kind(c) for c in captions]
        rel = shapes_relevance(captions, [test.scene(int(i)) for i in rows])
        txt, img = emb["text_emb"][rows], emb["image_emb"][rows]

        def gen() -> torch.Generator:
            return torch.Generator().manual_seed(gal)

        preds = {
            "text embedding": txt,
            "prior mean (1 step)": prior.sample(txt, None, steps=1, generator=gen()),
            "prior, guidance none": prior.sample(txt, None, steps=64, guidance_scale=None, generator=gen()),
            "prior, guidance 2": prior.sample(txt, None, steps=64, guidance_scale=2.0, generator=gen()),
            "prior, guidance 4": prior.sample(txt, None, steps=64, guidance_scale=4.0, generator=gen()),
            "prior, guidance 2, best of 2": prior.sample_best_of(txt, None, n=2, steps=64, guidance_scale=2.0,
                                                                 generator=gen()),
            "prior, guidance 2, 16 steps": prior.sample(txt, None, steps=16, guidance_scale=2.0, generator=gen()),
            "prior, guidance 2, 250 steps": prior.sample(txt, None, steps=250, guidance_scale=2.0, generator=gen()),
        }
        # K draws of a perfect prior (fresh scenes) and K prior samples, per caption
        oracle = torch.stack([shapes_oracle_embeddings(clip, captions, seed=1000 * gal + k) for k in range(K)])
        samples = prior.sample(txt.repeat(K, 1), None, steps=64, guidance_scale=2.0, generator=gen()).view(K, len(rows), -1)
        draws = {"oracle sample": oracle, f"prior, guidance 2 ({K} draws)": samples}
        preds["oracle mean"] = F.normalize(oracle, dim=-1).mean(0)

        def score(name: str, strict: torch.Tensor, relevant: torch.Tensor, p: torch.Tensor) -> None:
            err = p - img
            shared = err.mean(0)
            rows_out.setdefault(name, []).append({
                "strict": strict.mean().item(), "relevant": relevant.mean().item(),
                "cosine": cosine_to_true(p, img), "error": err.norm(dim=1).mean().item(),
                "shared_error": shared.norm().item(), "specific_error": (err - shared).norm(dim=1).mean().item(),
            })
            for kind, s, r in zip(kinds, strict.tolist(), relevant.tolist()):
                kinds_out.setdefault(kind, {}).setdefault(name, []).append((s, r))

        for name, p in preds.items():
            p = p.float().cpu()
            score(name, retrieval_hits(p, img).float(), retrieval_hits(p, img, rel).float(), p)
        for name, d in draws.items():  # per-caption hit rates averaged over the K draws
            d = d.float().cpu()
            strict = torch.stack([retrieval_hits(d[k], img).float() for k in range(K)]).mean(0)
            relevant = torch.stack([retrieval_hits(d[k], img, rel).float() for k in range(K)]).mean(0)
            score(name, strict, relevant, d[0])  # cosine and error columns: the first draw
        print(f"gallery {gal} ({time.perf_counter() - t0:.0f} s): "
              + ", ".join(f"{k} {v[-1]['relevant']:.3f}" for k, v in rows_out.items()), flush=True)

    keys = ("strict", "relevant", "cosine", "error", "shared_error", "specific_error")
    summary = {name: {k: statistics.mean(r[k] for r in runs) for k in keys} for name, runs in rows_out.items()}
    by_kind = {kind: {"n": len(next(iter(m.values()))),
                      **{name: {"strict": statistics.mean(s for s, _ in v), "relevant": statistics.mean(r for _, r in v)}
                         for name, v in m.items()}}
               for kind, m in sorted(kinds_out.items())}
    print(f"\nmeans over {args.galleries} galleries of {args.n} captions")
    print(f"{'method':34s} {'strict':>7s} {'relevant':>9s} {'cosine':>7s} {'|error|':>8s} {'shared':>7s} {'specific':>9s}")
    for name, m in summary.items():
        print(f"{name:34s} {m['strict']:7.3f} {m['relevant']:9.3f} {m['cosine']:7.3f} {m['error']:8.3f} "
              f"{m['shared_error']:7.3f} {m['specific_error']:9.3f}")
    for kind, m in by_kind.items():
        print(f"\n{kind} ({m['n']} captions): relevant top-1 (strict)")
        for name, v in m.items():
            if name != "n":
                print(f"  {name:32s} {v['relevant']:.3f} ({v['strict']:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"galleries": args.galleries, "n": args.n, "oracle_draws": K,
                                               "summary": summary, "by_caption_kind": by_kind,
                                               "per_gallery": rows_out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
