"""``diffscm evaluate``: the evaluation protocols."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import DiffSCMError
from ._common import check_outputs, load_scm, prepare_evaluation
from .app import app


@app.command()
def evaluate(
    model: str = typer.Option("mnist", help="Shipped model name (mnist) or an SCM folder with evaluation models."),
    task: str = typer.Option("counterfactual", help="counterfactual (effectiveness, CLD, ...) or localization (Dice, AUPRC, AUROC)."),
    protocol: str = typer.Option("auto", help="counterfactual: folder (any SCM on a dataset folder: every image parent intervened on, judged by the SCM's oracles), mnist (digit interventions on MNIST) or cfbench (the counterfactual benchmark's Morpho-MNIST protocol; needs --data-dir with the Morpho-MNIST test split); auto: folder when --data-dir holds labels.csv, else mnist."),
    method: list[str] = typer.Option(["diffscm"], "--method", help="counterfactual: diffscm, diffscm-paper, diffscm-reference, cvae or prototype (cfbench: diffscm, diffscm-paper, cvae); localization: implicit, classifier, anoddpm, vae (default all). Repeatable."),
    lesion_data: list[Path] = typer.Option([], "--lesion-data", help="localization: a dataset folder with val/test splits and masks, one per seed (repeatable)."),
    n_val: int = typer.Option(200, min=1, help="localization: validation images per seed (threshold choice)."),
    n_test: int = typer.Option(400, min=1, help="localization: test images per seed."),
    cfg_scale: Optional[float] = typer.Option(None, help="Classifier-free guidance weight w (conditional models; localization: implicit)."),
    n: int = typer.Option(1000, min=2, help="Number of factual images (the first n of --split)."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds (random targets, stochastic sampling)."),
    split: str = typer.Option("test", help="Split of the factual images and of CLD's real-image pool: test or valid (a dataset folder: its own split names, e.g. val)."),
    comp_n: int = typer.Option(100, min=0, help="Images on which the null intervention is iterated 10 times."),
    rev_n: int = typer.Option(100, min=0, help="folder: reversibility on the first REV_N images."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON."),
    report: Optional[Path] = typer.Option(None, help="Report folder: index.md + PNG grids."),
    steps: Optional[int] = typer.Option(None, help="diffscm: DDIM grid size N."),
    ratio: Optional[float] = typer.Option(None, help="diffscm: sampling progression ratio L."),
    scale: Optional[float] = typer.Option(None, help="diffscm: guidance scale s."),
    dynamic_norm: Optional[bool] = typer.Option(None, "--dynamic-norm/--no-dynamic-norm", help="diffscm: dynamic normalisation."),
    mechanism: Optional[str] = typer.Option(None, help="diffscm: image mechanism, paper or conditional."),
    inversion: Optional[str] = typer.Option(None, help="diffscm: abduction, ddim, fixed-point, exact or bdia."),
    inversion_iters: Optional[int] = typer.Option(None, min=0, max=100, help="diffscm: fixed-point iterations per step."),
    w: Optional[float] = typer.Option(None, "--w", help="diffscm: classifier-free weight of every parent (conditional mechanism; 1 = none)."),
    guidance: Optional[str] = typer.Option(None, help="diffscm: where the weights and scales act, all, intervened or changed."),
    batch_size: Optional[int] = typer.Option(None, min=1),
    cache: Optional[Path] = typer.Option(None, help="Folder of resumable generation chunks (default: the diffscm cache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write generation chunks."),
    n_boot: int = typer.Option(1000, min=10, help="Bootstrap resamples."),
    proto_iterations: int = typer.Option(300, min=1, help="prototype: FISTA iterations per round of the c search."),
    fid_reference: int = typer.Option(10000, min=2, help="Held-out valid images whose oracle features are KID/FID's real set."),
    data_dir: Optional[Path] = typer.Option(None, help="IDX folder instead of the package index."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --report / an existing --json."),
    device: str = typer.Option("auto"), quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Effectiveness, composition, reversibility, CLD, FID (oracle features) and speed of counterfactual methods;
    with --task localization, lesion localisation by healthy counterfactuals and baselines. Counterfactual
    evaluation under `torchrun --nproc_per_node K -m diffscm.cli evaluate …` shares the chunks over the processes
    (through the cache folder, which they must all see); rank 0 scores and writes."""
    from ..eval.baselines import PrototypeParams
    from ..eval.protocols.mnist import METHODS, default_cache, run_evaluate
    from ._common import parse_list

    if task not in ("counterfactual", "localization"):
        raise DiffSCMError(f"unknown --task {task!r} (counterfactual or localization)")
    if task == "localization":
        from ..eval.protocols.lesion import run_localization_eval

        check_outputs(json_out, report, overwrite)
        run_localization_eval(load_scm(model, device), [] if method == ["diffscm"] else method, lesion_data,
                              n_val, n_test, steps, ratio, cfg_scale, scale, dynamic_norm, batch_size,
                              None if no_cache else (cache or default_cache()), json_out, report, progress=not quiet,
                              echo=typer.echo)
        return
    if lesion_data:
        raise DiffSCMError("--lesion-data belongs to --task localization")
    if protocol == "auto":
        protocol = "folder" if data_dir is not None and (data_dir / "labels.csv").is_file() else "mnist"
    if protocol not in ("folder", "mnist", "cfbench"):
        raise DiffSCMError(f"unknown --protocol {protocol!r} (folder, mnist or cfbench)")
    if protocol == "folder":
        _run_folder_cli(model, device, method, data_dir, split, n, seeds, comp_n, rev_n, json_out, report, overwrite,
                        None if no_cache else (cache or default_cache()), not quiet, n_boot,
                        {"steps": steps, "ratio": ratio, "scale": scale, "batch_size": batch_size,
                         "dynamic_norm": dynamic_norm, "cfg_scale": cfg_scale, "mechanism": mechanism,
                         "inversion": inversion, "inversion_iters": inversion_iters, "guidance": guidance}, w)
        return
    if protocol == "cfbench":
        _run_cfbench_cli(model, device, method, data_dir, n, seeds, comp_n, json_out, report, overwrite,
                         None if no_cache else (cache or default_cache()), not quiet, n_boot,
                         {"steps": steps, "ratio": ratio, "scale": scale, "batch_size": batch_size,
                          "mechanism": mechanism, "inversion": inversion, "inversion_iters": inversion_iters,
                          "guidance": guidance}, w)
        return

    bad = [m for m in method if m not in METHODS]
    if bad:
        raise DiffSCMError(f"unknown --method {bad[0]!r} (choose from {', '.join(METHODS)})")
    if len(set(method)) != len(method):
        raise DiffSCMError("--method repeats a method")
    seed_list = parse_list(seeds, "--seeds", int)
    if any(s < 0 or s >= 2**31 for s in seed_list):
        raise DiffSCMError(f"--seeds {seeds!r}: seeds must be in 0..2^31-1")
    scm, overrides = prepare_evaluation(split, json_out, report, overwrite, model, device,
                                         {"steps": steps, "ratio": ratio, "scale": scale, "dynamic_norm": dynamic_norm,
                                          "batch_size": batch_size, "cfg_scale": cfg_scale, "mechanism": mechanism,
                                          "inversion": inversion, "inversion_iters": inversion_iters,
                                          "guidance": guidance}, w)
    scm.image_mechanism.grid(scm.options(**overrides))
    results, _, _ = run_evaluate(scm, method, overrides, n, seed_list, split, comp_n, json_out, report,
                           None if no_cache else (cache or default_cache()), data_dir, progress=not quiet, n_boot=n_boot,
                           proto_params=PrototypeParams(iterations=proto_iterations), fid_reference=fid_reference)
    for r in results:
        typer.echo(json.dumps({"method": r["method"], **{k: round(v["mean"], 4) for k, v in r["metrics"].items()}}))


def _run_cfbench_cli(model, device, method, data_dir, n, seeds, comp_n, json_out, report, overwrite, cache, progress,
                     n_boot, overrides, w) -> None:
    from ..files import write_json_atomic
    from ._common import parse_list
    from ..eval.protocols.morpho import CFBENCH_METHODS, cfbench_methods, cfbench_table, run_cfbench
    from ..files import write_text_atomic

    if data_dir is None:
        raise DiffSCMError("--protocol cfbench needs --data-dir: a Morpho-MNIST folder (t10k-images-idx3-ubyte.gz, "
                           "t10k-labels-idx1-ubyte.gz, t10k-morpho.csv, or one written by `diffscm data morphomnist --out`)")
    bad = [m for m in method if m not in CFBENCH_METHODS]
    if bad:
        raise DiffSCMError(f"unknown --method {bad[0]!r} for --protocol cfbench (choose from {', '.join(CFBENCH_METHODS)})")
    seed_list = parse_list(seeds, "--seeds", int)
    scm, overrides = prepare_evaluation("test", json_out, report, overwrite, model, device, overrides, w)
    if not {"digit", "thickness", "intensity"} <= set(scm.graph.image.parents):
        raise DiffSCMError(f"model {model}: --protocol cfbench needs an SCM of Morpho-MNIST (digit, thickness, intensity → image)")
    res = run_cfbench(scm, cfbench_methods(scm, list(method), {k: v for k, v in overrides.items() if v is not None}),
                      data_dir, n, tuple(seed_list), comp_n, cache, progress, n_boot)
    if json_out is not None:
        write_json_atomic(json_out, res)
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        write_text_atomic(report / "index.md", "# The counterfactual benchmark on Morpho-MNIST\n\n"
                          + cfbench_table(res["results"]) + "\n")
    for name, r in res["results"].items():
        typer.echo(json.dumps({"method": name, **{f"{k}:{col}": round(v[col]["mean"], 4)
                                                  for k, v in r["interventions"].items()
                                                  for col in ("thickness_mae", "intensity_mae", "digit_accuracy")}}))


def _run_folder_cli(model, device, method, data_dir, split, n, seeds, comp_n, rev_n, json_out, report, overwrite,
                    cache, progress, n_boot, overrides, w) -> None:
    from ..distributed import topology
    from ..eval.protocols.generic import generic_table, run_generic
    from ..files import write_json_atomic, write_text_atomic
    from ._common import parse_list

    if data_dir is None or not (data_dir / "labels.csv").is_file():
        raise DiffSCMError("--protocol folder needs --data-dir: a dataset folder with labels.csv and images/")
    if method != ["diffscm"]:
        raise DiffSCMError("--protocol folder evaluates the SCM's own mechanism: --method diffscm")
    seed_list = parse_list(seeds, "--seeds", int)
    if any(s < 0 or s >= 2**31 for s in seed_list):
        raise DiffSCMError(f"--seeds {seeds!r}: seeds must be in 0..2^31-1")
    # the folder's own split names (train/val/test …): read_table reports one that has no rows
    scm, overrides = prepare_evaluation("test", json_out, report, overwrite, model, device, overrides, w)
    res = run_generic(scm, data_dir, split, n, tuple(seed_list), comp_n, rev_n, cache, progress, n_boot,
                      topology(), overrides)
    if not topology().is_main:
        return
    if json_out is not None:
        write_json_atomic(json_out, res)
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        write_text_atomic(report / "index.md", f"# Counterfactual evaluation of {model}\n\n" + generic_table(res))
    for kind, r in res["results"]["interventions"].items():
        typer.echo(json.dumps({"do": kind, **{k: round(v["mean"], 4) for k, v in r.items()}}))
