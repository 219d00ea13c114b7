"""``retrievalkit reproduce`` step for real instance photos: SMVS DVD covers, Paris6k-mini, SOP test products.

Survey §2.3 (off-the-shelf features), §2.3.2 (whitening), §2.4.2.1 (diffusion), §2.5.3 and Figure
2.13(a). Taught in notebooks/13_instance_retrieval.
"""
from __future__ import annotations

import pandas as pd

from .. import figures_instance as fi
from . import instance
from .steps import Figure, Step


def _instance(run):
    sets = instance.Sets(small=run.small, full=run.full, data_home=run.data_home, progress=run.progress)
    deep = instance.offtheshelf(sets)
    best = deep.loc[deep["learn_mAP"].idxmax()]
    pipeline, params = instance.pipeline(sets, best)
    settings = pd.DataFrame({"setting": list(params), "value": [str(v) for v in params.values()]})
    settings.loc[len(settings)] = ["input_side", str(sets.side)]
    hist, sift = instance.colour_histogram(sets), instance.rootsift_embeddings(sets)
    baseline = pd.concat([hist, sift], ignore_index=True)
    baseline.attrs["per_query"] = hist.attrs["per_query"] + sift.attrs["per_query"]
    return {"instance_baseline": baseline, "instance_offtheshelf": deep,
            "instance_pipeline": pipeline, "instance_depth": instance.depth_within(sets),
            "instance_dimension": instance.dimension(sets, best),
            "instance_finetune": instance.finetune_sop(sets), "instance_settings": settings}


def _summary(baseline: pd.DataFrame, deep: pd.DataFrame, pipeline: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """One row per method and dataset: mAP on the headline protocol (and P@1, SMVS's usual figure)."""
    best = deep.loc[deep["learn_mAP"].idxmax()]
    rows = [fi.headline(baseline).assign(row=lambda d: d["method"]),
            fi.headline(pipeline).assign(row=lambda d: d["stage"].where(d["stage"] != "off-the-shelf",
                                                                        f"{best['network']} {best['pooling']}"))]
    data = pd.concat(rows, ignore_index=True)
    table = data.pivot_table(index="row", columns="dataset", values="mAP", sort=False)
    table["smvs_dvd P@1"] = data[data["dataset"] == "smvs_dvd"].set_index("row")["mP@1"]
    after = tuned[(tuned["stage"] == "after") & (tuned["protocol"] == "all")]
    if len(after):
        pick = after.loc[after["best_val_mAP"].idxmax()]
        table.loc[f"fine-tuned Lite0 tail, {pick['method']} loss (best on validation products)", "sop_kettles_fans"] = pick["mAP"]
    best_test = fi.headline(deep).groupby("dataset")["mAP"].max()
    table.loc["(best network × pooling per test set, for reference)"] = best_test
    return table


def _handcrafted(baseline: pd.DataFrame, deep: pd.DataFrame) -> pd.DataFrame:
    """mAP per dataset: the colour histogram, each RootSIFT embedding, and the CNN descriptor picked on SOP learning."""
    best = deep.loc[deep["learn_mAP"].idxmax()]
    chosen = deep[(deep["network"] == best["network"]) & (deep["pooling"] == best["pooling"])]
    rows = pd.concat([baseline, chosen.assign(method=f"{best['network']} {best['pooling']} (CNN)")])
    return fi.headline(rows).pivot_table(index="method", columns="dataset", values="mAP", sort=False)


def _dimension(dim: pd.DataFrame) -> pd.DataFrame:
    return fi.headline(dim).pivot_table(index=["recipe", "dim"], columns="dataset", values="mAP", sort=False)


def _section(run, tables) -> str:
    base, deep, pipe, depth, tuned = (tables[f"instance_{n}"]
                                      for n in ("baseline", "offtheshelf", "pipeline", "depth", "finetune"))
    settings = dict(zip(tables["instance_settings"]["setting"], tables["instance_settings"]["value"]))
    best = deep.loc[deep["learn_mAP"].idxmax()]
    paris = pd.concat([base, pipe])
    paris = paris[paris["dataset"] == "rparis6k_mini"].pivot_table(index="stage", columns="protocol", values="mAP",
                                                                   sort=False)
    smvs = deep[(deep["dataset"] == "smvs_dvd") & (deep["network"] == best["network"])]
    cameras = smvs.pivot_table(index="pooling", columns="protocol", values="mAP")
    within = fi.headline(depth).pivot_table(index="block_depth", columns=["network", "dataset"], values="mAP")
    return (
        "## Instance retrieval on real photos (§2.3, §2.3.2, §2.4.2.1, Figure 2.13a)\n\n"
        "SMVS DVD covers (400 phone photos against 100 clean covers, one positive each), Paris6k-mini (the "
        "Paris6k photos present, revisited Easy/Medium/Hard restricted to them; headline: Medium) and the test "
        "products of SOP kettles/fans (every photo with another photo of its product is a query, itself junk). "
        f"Input: longest side {settings['input_side']} px, aspect kept. Nothing is learned on these test sets: "
        f"the descriptor ({best['network']} {best['pooling'].upper()}, best mAP {best['learn_mAP']:.4f} over SOP's "
        "learning products among every network × pooling), PCA-w (dimension chosen on SOP's learning products: "
        f"{settings['pca_w']}; whether to whiten before re-ranking: {settings['whitening']}) and the re-ranking "
        f"settings (αQE k = {settings['qe_k']}, diffusion graph k = {settings['graph_k']}, α = {settings['alpha']}) "
        "come from SOP's learning products. SMVS and Paris6k-mini have no learning split: they get what SOP "
        "taught, a domain shift.\n\n"
        f"mAP per dataset (each stage adds to the previous):\n\n{_summary(base, deep, pipe, tuned).to_markdown(floatfmt='.4f')}\n\n"
        "Fine-tuning on SOP's learning products (§2.4; the COIL-100 recipe: EfficientNet-Lite0 frozen up to stage6 "
        "at 128 px, the tail trained, whole products held out for validation and early stopping), scored on the "
        "test products:\n\n"
        f"{tuned[tuned['protocol'] == 'all'][['method', 'stage', 'best_val_mAP', 'mAP', 'mP@1']].to_markdown(index=False, floatfmt='.4f')}\n\n"
        f"Paris6k-mini by protocol:\n\n{paris.to_markdown(floatfmt='.4f')}\n\n"
        f"SMVS per camera, {best['network']}:\n\n{cameras.to_markdown(floatfmt='.4f')}\n\n"
        f"GeM on every block (within-network depth):\n\n{within.to_markdown(floatfmt='.4f')}\n\n"
        "Deep vs handcrafted (§2.3.2.2): RootSIFT on OpenCV's DoG keypoints, aggregated by BoW "
        "(tf-idf), VLAD and Fisher vectors, every codebook learned on SOP's learning photos, against the chosen CNN "
        "descriptor:\n\n"
        f"{_handcrafted(base, deep).to_markdown(floatfmt='.4f')}\n\n"
        f"Dimension (Figure 2.13b): the chosen descriptor PCA-whitened (learned on SOP's learning photos) to each "
        f"width:\n\n{_dimension(tables['instance_dimension']).to_markdown(floatfmt='.4f')}\n\n"
        "![pipeline](instance_pipeline.png)\n\n![pooling](instance_pooling.png)\n\n![depth](instance_depth.png)\n\n"
        "![handcrafted](instance_handcrafted.png)\n\n![dimension](instance_dimension.png)\n"
    )


STEPS = {
    "instance": Step(
        "instance",
        ("instance_baseline", "instance_offtheshelf", "instance_pipeline", "instance_depth", "instance_dimension",
         "instance_finetune", "instance_settings"),
        _instance,
        (Figure("instance_pipeline", ("instance_baseline", "instance_pipeline"), fi.pipeline_bars,
                "colour histogram, best CNN, + PCA-w, + αQE, + diffusion on each real set"),
         Figure("instance_pooling", ("instance_offtheshelf",), fi.pooling_bars,
                "Figure 2.12(b) on real photos: every pooling of every network, per dataset"),
         Figure("instance_depth", ("instance_offtheshelf", "instance_depth"), fi.depth_panels,
                "Figure 2.13(a) redesigned: across networks (markers) and within a network (every block)"),
         Figure("instance_handcrafted", ("instance_baseline", "instance_offtheshelf"), fi.handcrafted_bars,
                "deep vs handcrafted on real photos: colour histogram, RootSIFT BoW/VLAD/FV, the chosen CNN"),
         Figure("instance_dimension", ("instance_dimension",), fi.dimension_lines,
                "Figure 2.13(b) on real photos: mAP vs PCA-w width, per dataset")),
        _section,
    )
}
