"""Train an emoji decoder at 32×32 and measure it: emoji CLIP → embeddings → decoder → decoded retrieval.

    python scripts/train_emoji_decoder.py [MODE]        # MODE: smoke | cpu (default) | gpu

Trains the emoji CLIP with its recipe for MODE (`recipes.clip.train`), encodes the train and test
emoji once (`banks.make`, images kept at 32×32), trains a decoder with its emoji recipe for MODE
(`recipes.decoder.train`) on the train split, then decodes the embeddings of 82 train and the 82 test emoji and asks the CLIP
which emoji each decoded picture is (`evaluation.decoder.decoded_retrieval`; chance top-1 1/82). Writes
runs/emoji_decoder_<MODE>.json and two picture grids (top row: the emoji, bottom: decoded).
Nothing is shipped: emoji pictures worth looking at need the gpu recipe.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def main(mode: str = "cpu") -> int:
    import torch

    from dalle_mini_core import recipes
    from dalle_mini_core.banks import BankSpec, make
    from dalle_mini_core.evaluation.decoder import decoded_retrieval
    from dalle_mini_core.paths import runs_dir
    from dalle_mini_core.viz import save_grid

    out_dir = runs_dir()
    t0 = time.perf_counter()
    clip, _ = recipes.clip.train("emoji", mode, progress=False)
    t_clip = time.perf_counter() - t0
    recipe = recipes.decoder.RECIPES["emoji"][mode]
    train_bank = make(recipes.decoder.bank_spec(recipe, "emoji"), clip=clip)  # the train emoji, then other captions
    test_bank = make(BankSpec("emoji", 82, 32, embedded=True, split="test"), clip=clip)  # the 82 test emoji
    t1 = time.perf_counter()
    decoder, result = recipes.decoder.train("emoji", mode, recipe=recipe, bank=train_bank, progress=False)
    report = {"mode": mode, "clip_seconds": round(t_clip, 1), "decoder_seconds": round(time.perf_counter() - t1, 1),
              "decoder_steps": result.step, "final_loss": result.metrics[-1]["loss"],
              "threads": torch.get_num_threads()}
    n = len(test_bank["caption"])
    for name, bank in (("train", {k: v[:n] for k, v in train_bank.items()}), ("test", test_bank)):
        r = decoded_retrieval(decoder, clip, bank, clip_size=64, seed=0)
        save_grid(torch.cat([bank["image"][:8], r.pop("images")[:8]]), out_dir / f"emoji_decoder_{name}.png",
                  nrow=8, scale=2)
        report[name] = r
    path = out_dir / f"emoji_decoder_{mode}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"wrote {path} and {out_dir}/emoji_decoder_{{train,test}}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:2]))
