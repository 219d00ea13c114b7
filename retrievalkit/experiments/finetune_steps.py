"""``retrievalkit reproduce`` step for fine-tuning (Survey §2.4, Table 2.3): CSVs, figures, report section.

Taught in notebooks/09_supervised_finetuning and notebooks/10_unsupervised_finetuning.
"""
from __future__ import annotations

from .. import figures_finetune as ff
from .. import survey
from . import finetune
from .steps import Figure, Step

PROTOCOL_NOTE = (
    "Protocol differences: the survey's Table 2.3 fine-tunes whole VGG/ResNet networks on landmark "
    "collections (tens of thousands of images, often SfM-mined tuples) and scores Oxford/Paris/Holidays "
    "at ~1024 px, mostly with extra PCA-whitening or regional pooling. Ours: EfficientNet-Lite0 at 128 px, "
    "only stage7 + the head conv + GeM p trained on top of cached, frozen stage6 maps; training on "
    "COIL-100 objects 1–40, validation (early stopping, best epoch) on objects 41–50, scores on the test "
    "split (objects 51–100, 200 queries, each excluded from its own ranking, trapezoid AP). The regression "
    "row (Eq. 2.15) learns only a pair-scoring vector W over frozen features and ranks with it. "
    "Unsupervised rows read no label and keep their last epoch. Compare directions (does fine-tuning help, "
    "which loss helps most), not absolute numbers."
)


def _finetune(run):
    """Fine-tune with every §2.4 loss and the unsupervised methods."""
    scores, history, points = finetune.compare(run.coil, progress=run.progress)
    return {"finetune": scores, "finetune_history": history, "finetune_embedding": points,
            "table_2_3_ours": finetune.table_2_3_like(scores)}


def _finetune_section(run, tables) -> str:
    scores, ours, reported = tables["finetune"], tables["table_2_3_ours"], survey.table_2_3()
    wide = scores.pivot_table(index=["stage", "method"], columns="protocol", values="mAP", sort=False).reset_index()
    timing = scores[(scores["stage"] == "after") & (scores["protocol"] == "all")][
        ["method", "supervision", "best_epoch", "epochs_run", "s_per_epoch", "train_s", "gem_p"]].astype(
        {"best_epoch": int, "epochs_run": int})
    extra = scores[(scores["method"] == "manifold") & (scores["protocol"] == "all")]
    mining = ""
    if len(extra) and "pos_precision" in extra:
        mining = (f"Manifold mining quality (labels read only for this diagnostic): "
                  f"{100 * float(extra['pos_precision'].iloc[0]):.1f}% of mined positives and "
                  f"{100 * float(extra['neg_precision'].iloc[0]):.1f}% of mined negatives are correct.\n\n")
    rep = reported[["ref", "method", "supervision", "loss", "backbone", "layer", "dim", "oxford5k", "paris6k",
                    "holidays"]]
    return (
        "## Fine-tuning (§2.4, Eqs. 2.13–2.19, Table 2.3)\n\n"
        f"COIL-100 test mAP before (off-the-shelf, same 128-px input and GeM) and after fine-tuning; "
        f"{int(scores['train_images'].iloc[0])} training and {int(scores['val_images'].iloc[0])} validation "
        "images from the learning split.\n\n"
        f"{wide.to_markdown(index=False, floatfmt='.4f')}\n\n"
        f"Training (seconds on this machine's shared CPU cores):\n\n{timing.to_markdown(index=False, floatfmt='.3f')}\n\n"
        f"{mining}"
        f"Table 2.3 analogue (ours):\n\n{ours.to_markdown(index=False, floatfmt='.4f')}\n\n"
        f"Survey Table 2.3 (reported mAP %):\n\n{rep.to_markdown(index=False)}\n\n"
        f"{PROTOCOL_NOTE}\n\n![before/after](finetune_before_after.png)\n\n![curves](finetune_curves.png)\n\n"
        "![embedding](finetune_embedding.png)\n\n![Table 2.3](table_2_3_reported_vs_ours.png)\n"
    )


STEPS = {"finetune": Step(
    "finetune", ("finetune", "finetune_history", "finetune_embedding", "table_2_3_ours"), _finetune,
    (Figure("finetune_before_after", ("finetune",), ff.before_after, "fine-tuning: test mAP before and after, per loss"),
     Figure("finetune_curves", ("finetune_history",), ff.training_curves, "fine-tuning: training curves"),
     Figure("finetune_embedding", ("finetune_embedding",), ff.embedding,
            "fine-tuning: test descriptors in 2-D before and after"),
     Figure("table_2_3_reported_vs_ours", ("table_2_3_ours",), lambda ours: ff.reported_vs_ours(ours, survey.table_2_3()),
            "Table 2.3: reported vs ours")),
    _finetune_section)}
