"""Figures of the instance-retrieval step: one panel (or colour) per real dataset.

Drawn from :mod:`retrievalkit.experiments.instance`'s tables; taught in notebooks/13_instance_retrieval.
"""
from __future__ import annotations

HEADLINE = {"smvs_dvd": "all", "rparis6k_mini": "medium", "sop_kettles_fans": "all"}
LABEL = {"smvs_dvd": "SMVS DVD covers", "rparis6k_mini": "Paris6k-mini (Medium)", "sop_kettles_fans": "SOP test products"}


def headline(df):
    """The rows of each dataset's headline protocol (SMVS and SOP: all queries; Paris6k-mini: Medium)."""
    return df[[HEADLINE.get(d) == p for d, p in zip(df["dataset"], df["protocol"])]]


def pipeline_bars(baseline, pipeline):
    """Colour histogram, best off-the-shelf CNN, then + PCA-w, + αQE, + diffusion: mAP per dataset."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    data = headline(pd.concat([baseline, pipeline], ignore_index=True))
    data = data.assign(dataset=data["dataset"].map(LABEL))
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    sns.barplot(data=data, x="dataset", y="mAP", hue="stage", ax=ax)
    ax.set_xlabel("")
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize=7, ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    net, pooling = pipeline["network"].iloc[0], pipeline["pooling"].iloc[0]
    ax.set_title(f"Instance retrieval on real photos: {net} {pooling.upper()} (picked on SOP's learning products)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def pooling_bars(offtheshelf):
    """mAP of every pooling of every network's last conv map, one panel per dataset (Figure 2.12b on real photos)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = headline(offtheshelf)
    names = list(HEADLINE)
    fig, axes = plt.subplots(1, len(names), figsize=(4.0 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        sns.barplot(data=data[data["dataset"] == name], x="pooling", y="mAP", hue="network", ax=ax)
        ax.set_title(LABEL[name], fontsize=9)
        ax.set_xlabel("")
        ax.get_legend().remove()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncols=len(labels), loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def depth_panels(offtheshelf, within, pooling: str = "gem"):
    """Figure 2.13(a) redesigned: (a) across networks, one marker per network at its depth, no joining line;
    (b) within one network, mAP of GeM on every block's output, one line per dataset."""
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(within["network"]))
    fig, axes = plt.subplots(1, 1 + len(nets), figsize=(4.2 * (1 + len(nets)), 3.4), squeeze=False)
    ax = axes[0, 0]
    data = headline(offtheshelf)
    data = data[data["pooling"] == pooling]
    for k, (name, part) in enumerate(data.groupby("dataset", sort=False)):
        ax.scatter(part["depth"] + 0.35 * (k - 1), part["mAP"], label=LABEL[name], s=22)
    for (net, depth), part in data.groupby(["network", "depth"], sort=False):
        same = data[(data["depth"] == depth) & (data["network"] != net)]
        note = " (compound scaling)" if len(same) else ""
        ax.annotate(net.replace("efficientnet_", "") + note, (depth, part["mAP"].max()), fontsize=6,
                    xytext=(0, 4 + 8 * (net.endswith("2"))), textcoords="offset points", ha="center")
    ax.margins(y=0.25)  # headroom for the network labels above the highest marker (they must not reach the title)
    ax.set_xlabel("depth (weight layers)")
    ax.set_ylabel(f"mAP ({pooling.upper()})")
    ax.set_title("(a) across networks", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncols=len(labels), loc="lower center", frameon=False)
    for ax, net in zip(axes[0, 1:], nets):
        part = headline(within[within["network"] == net])
        for name, curve in part.groupby("dataset", sort=False):
            ax.plot(curve["block_depth"], curve["mAP"], marker=".", label=LABEL[name])
        ax.set_xlabel(f"block of {net}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"(b) within {net}", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def handcrafted_bars(baseline, offtheshelf):
    """Deep vs handcrafted per dataset: colour histogram, RootSIFT BoW/VLAD/FV, and the CNN descriptor picked on
    SOP's learning products (§2.3.2.2, §2.1 question 1)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    best = offtheshelf.loc[offtheshelf["learn_mAP"].idxmax()]
    cnn = offtheshelf[(offtheshelf["network"] == best["network"]) & (offtheshelf["pooling"] == best["pooling"])]
    data = headline(pd.concat([baseline, cnn.assign(stage=f"CNN: {best['network']} {best['pooling'].upper()}")],
                              ignore_index=True))
    data = data.assign(dataset=data["dataset"].map(LABEL))
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    sns.barplot(data=data, x="dataset", y="mAP", hue="stage", ax=ax)
    ax.set_xlabel("")
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize=7, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    ax.set_title("Deep vs handcrafted on real photos (every codebook learned on SOP's learning products)", fontsize=9)
    fig.tight_layout()
    return fig


def dimension_lines(dimension):
    """Figure 2.13(b) on real photos: mAP vs PCA-w width per dataset, the native width as a dashed level."""
    import matplotlib.pyplot as plt

    data = headline(dimension)
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for k, (name, part) in enumerate(data.groupby("dataset", sort=False)):
        colour = f"C{k}"
        curve = part[part["recipe"] == "pca_w"].sort_values("dim")
        ax.plot(curve["dim"], curve["mAP"], marker="o", color=colour, label=f"{LABEL[name]}, PCA-w")
        native = part[part["recipe"] == "native"]
        if len(native):
            ax.axhline(native["mAP"].iloc[0], color=colour, linestyle="--", linewidth=1,
                       label=f"{LABEL[name]}, native {int(native['dim'].iloc[0])}-d")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("dimension after PCA-whitening")
    ax.set_ylabel("mAP")
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    ax.set_title(f"Dimension on real photos ({data['network'].iloc[0]} {data['pooling'].iloc[0].upper()})", fontsize=9)
    fig.tight_layout()
    return fig
