#!/bin/bash
# Pack the Morpho-MNIST SCM into src/diffscm/pretrained/morphomnist. Once docs/results/morpho_front.json exists,
# the defaults chosen there (conditional mechanism, and the paper mechanism's own) become the pack's defaults.
set -e
cd "$(dirname "$0")/../.."   # run from runs/morpho/ (see ../README.md)
source .venv/bin/activate
R=runs/morpho
DEFAULTS=$(python - <<'PY'
import json, shlex
from pathlib import Path
f = Path("docs/results/morpho_front.json")
if f.exists():
    c = json.loads(f.read_text())["choice"]
    k, p, out = c["conditional"], c["paper"], ["--guidance", "intervened"]
    out += ["--steps", k["steps"], "--inversion", k["inversion"], "--inversion-iters", k["inversion_iters"]]
    out += [a for n, w in k["w"].items() for a in ("--w", f"{n}={w}")]
    out += [a for n, s in k["scales"].items() for a in ("--scale", f"{n}={s}")]
    for key, v in (("steps", p["steps"]), ("inversion", p["inversion"]), ("inversion_iters", p["inversion_iters"]),
                   ("scales", json.dumps(p["scales"]))):
        out += ["--mechanism-default", f"paper:{key}={v}"]
    print(" ".join(shlex.quote(str(a)) for a in out))
PY
)
eval diffscm pack --graph examples/graphs/morphomnist.yaml --diffusion $R/diffusion \
  --predictor digit=$R/predictor_digit --predictor thickness=$R/predictor_thickness \
  --predictor intensity=$R/predictor_intensity --flow thickness=$R/flow_thickness --flow intensity=$R/flow_intensity \
  --oracle digit=$R/oracle_digit --oracle thickness=$R/oracle_thickness --oracle intensity=$R/oracle_intensity \
  --vae $R/vae --cvae $R/cvae --judge digit=$R/judge_digit --judge thickness=$R/judgeL_thickness \
  --judge intensity=$R/judgeL_intensity --no-clip "$DEFAULTS" --overwrite --out src/diffscm/pretrained/morphomnist
