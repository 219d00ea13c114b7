"""The survey's *reported* numbers as data, for "reported" vs "reproduced" figures. Survey §2.5.3.

Everything here is transcribed by hand from Tables 2.1–2.3 and the running text of §2.5.3 of
W. Chen et al., "Deep Image Retrieval: A Survey" (see :data:`CITATION`; the Markdown copy is
``shared/survey/deep-image-retrieval-survey.md``, whose line numbers :func:`text_numbers` cites).

Read these numbers as what they are: values collected by the survey from heterogeneous papers,
each with its own protocol — the *original* Oxford-5k / Paris-6k ground truth (not the revisited
one), Holidays with or without rotated images, UKBench as N-S score or sometimes mAP, AlexNet /
VGG / ResNet backbones, different input resolutions, query cropping, whitening data and
distractor sets. They are cited, never mixed with numbers computed by this package: a report may
only put them *side by side* with ours, with the protocol differences stated.

Conventions: mAP in percent (0–100); N-S score 0–4; time in milliseconds per query; ``None`` /
NaN = "-" (not reported). ``+100k`` columns are the survey's Oxford-105k / Paris-106k.
Figures 2.12 and 2.13 are images absent from the text, so only their claims are kept
(:func:`figure_claims`, ``values_available=False``): compare shapes and trends, not points.
The Markdown copy has no bibliography, so refs stay numbers (``[153]``) plus the method
names the tables print; there is no ``reference()`` lookup.
"""
from __future__ import annotations

import copy

import pandas as pd

CITATION = (
    'W. Chen, Y. Liu, W. Wang, E. Bakker, T. Georgiou, P. Fieguth, L. Liu and M. S. Lew, '
    '"Deep Image Retrieval: A Survey", chapter 2 of W. Chen, "Exploring deep learning for '
    'intelligent image retrieval", PhD thesis, Leiden University, 2021. '
    "https://hdl.handle.net/1887/3217054"
)
SOURCE = "shared/survey/deep-image-retrieval-survey.md"

# The Markdown is an OCR of rotated pages. In value cells of Tables 2.2/2.3 the glyphs
# "ı", "I", "1" and "," are the OCR of "-" (a 1 % mAP or a 1 N-S score is not a result);
# empty cells are read as "-" too and named in the row's note.

# ---------------------------------------------------------------- Table 2.1 (md lines 535–546)
# ref, label, dataset, distractors, mAP, N-S, time (ms). Only cells with a reported value.
# "(x)" in a cell is the +100k figure; LaTeX arrays such as "2 ms \\ (10 ms)" split the same way.
_T21 = [
    (153, "[153]", "oxford5k", None, 91.3, None, 5.45),
    (153, "[153]", "oxford5k", "100k", 88.4, None, 809.0),
    (153, "[153]", "holidays", None, 95.66, None, 3.11),
    (153, "[153]", "ukbench", None, None, 3.93, 4.91),
    (165, "[165]", "oxford5k", None, 92.6, None, 2.0),
    (165, "[165]", "oxford5k", "100k", 91.8, None, 10.0),
    (150, "[150]†", "oxford5k", None, 85.7, None, 20.0),
    (150, "[150]†", "paris6k", None, 94.1, None, 20.0),  # mAP printed without a "(+100k)" part
    (150, "[150]‡", "oxford5k", None, 95.8, None, 600.0),
    (150, "[150]‡", "paris6k", None, 96.9, None, 700.0),
    (172, "[172]", "oxford5k", None, 64.9, None, 0.81),
    (172, "[172]", "oxford5k", "100k", 58.8, None, 0.82),
    (57, "[57]", "oxford5k", None, 64.8, None, 0.77),
    (57, "[57]", "oxford5k", "100k", 57.9, None, 0.73),  # "0.77 ms (0.73 ms)": no line break, same rule
    (52, "[52]", "oxford5k", None, 55.5, None, 0.35),
    (52, "[52]", "paris6k", None, 71.0, None, 0.35),
]
_T21_NOTES = {"[150]†": "query time with global diffusion", "[150]‡": "query time with regional diffusion"}

# ---------------------------------------------------------------- Table 2.2 (md lines 572–585)
# The md prints the table transposed (one md row per field). The "Type" row's two rotated labels
# were OCR'd at columns 1 and 6; the split used here (first 6 single pass, last 8 multiple pass)
# follows §2.5.3's text (line 527 contrasts [85] with the single-pass [25, 50, 92]; [48], [65],
# [43], [108] are discussed as multiple pass) and the rows' own highlights.
# "?" marks an unreadable token of the "Feature Enhance." cell. "k" in dims is read as 1,000.
_WIDE = ["holidays", "ukbench_ns", "ukbench_map", "oxford5k", "oxford105k", "paris6k", "paris106k"]
_T22_COLUMNS = ["ref", "method", "pass", "backbone", "layer", "enhancement", "dim_text", *_WIDE, "note"]
_T22 = [
    # fields as in _T22_COLUMNS: values are Holidays, UKB N-S, UKB mAP, Oxford5k, +100k, Paris6k, +100k
    (50, "Neural codes", "single", "AlexNet", "FC6", "PCA", "128", 74.7, 3.42, None, 43.3, 38.6, None, None, ""),
    (31, "R-MAC", "single", "VGG16", "Conv5", "R-MAC + PCA_w", "512", None, None, None, 66.9, 61.6, 83.0, 75.7,
     "text line 523 cites R-MAC as [159] (the Paris-6k paper in §2.5.1); this table's [31] is kept"),
    (26, "CroW", "single", "VGG16", "Conv5", "CroW + PCA_w", "256", 85.1, None, None, 68.4, 63.7, 76.5, 69.1, ""),
    (82, "BLCF", "single", "VGG16", "Conv5", "BoW + PCA_w", "25k", None, None, None, 73.9, 59.3, 82.0, 64.8,
     "dimension is the BoW codebook size"),
    (25, "SPoC", "single", "VGG16", "Conv5", "SPoC + PCA", "256", 80.2, 3.65, None, 58.9, 57.8, None, None,
     "enhancement printed as PCA without the w subscript; kept as printed"),
    (92, "Multi-layer CNN", "single", "VGG16", "FC6 • Conv4-5", "SP", "4096", 91.4, 3.68, None, 61.5, None, None, None,
     "layer printed 'FC6 • Conv4 ~ 5': FC6 fused with Conv4 and Conv5"),
    (48, "Deepindex", "multiple", "AlexNet • VGG19", "FC6-7 • FC17-18", "BoW + PCA", "512", 81.7, 3.32, None,
     None, None, 75.4, None, "enhancement printed as PCA without the w subscript; kept as printed"),
    (65, "MOF", "multiple", "CNN-M*", "FC7 • Conv", "SP or MP + BoW", "20k", 76.8, 3.00, None, None, None, None, None,
     "Oxford5k and Paris6k cells are empty in the md (read as not reported); CNN-M* [75] is AlexNet-like"),
    (63, "Multi-scale CNN", "multiple", "VGG16", "Conv5", "SP or MP + PCA_w", "32k", 89.6, None, 95.1, 84.3, None,
     87.9, None, "UKBench reported as mAP, not N-S"),
    (43, "CNNaug-ss", "multiple", "Overfeat", "FC", "PCA_w", "15k", 84.3, None, 91.1, 68.0, None, 79.5, None,
     "UKBench reported as mAP, not N-S; backbone Overfeat [166]"),
    (29, "MOP-CNN", "multiple", "AlexNet", "FC7", "VLAD + ?", "2048", 80.2, None, None, None, None, None, None,
     "enhancement cell shows 'VLAD' over a lone '+': the second term is unreadable"),
    (73, "CCS", "multiple", "GoogLeNet", "Conv", "VLAD + ?", "128", 84.1, 3.81, None, 64.8, None, 76.8, None,
     "enhancement cell shows 'VLAD' over a lone '+': the second term is unreadable"),
    (85, "OLDFP", "multiple", "AlexNet", "FC6", "? + PCA_w", "512", 88.5, 3.81, None, 60.7, None, 66.2, None,
     "enhancement cell reads '+ Pr PCA_w': the first term is unreadable (likely MP)"),
    (108, "LDD", "multiple", "VGG19", "Conv5", "BoW + PCA_w", "500k", 84.6, None, None, 83.3, None, 87.2, None, ""),
]

# ---------------------------------------------------------------- Table 2.3 (md lines 587–627)
# The md lost this table's "Type" row (line 615 is blank) and its caption is rotated OCR
# (lines 587–613). Supervision comes from §2.5.3's text: [32, 57, 151] (line 550), [56]
# ("unsupervised way", line 550) and [152] (contrasted with "the supervised method [140]")
# are unsupervised; [50, 52, 53, 89, 106, 140, 171] are discussed as supervised; [142] and [55]
# sit inside the contiguous supervised block and are read as supervised.
_T23_COLUMNS = ["ref", "method", "supervision", "loss", "backbone", "layer", "enhancement", "dim_text", *_WIDE, "note"]
_T23 = [
    # fields as in _T23_COLUMNS: values are Holidays, UKB N-S, UKB mAP, Oxford5k, +100k, Paris6k, +100k
    (106, "DELF", "supervised", "CE Loss", "ResNet-101", "Conv4 Block", "Attention + PCA_w", "2048",
     None, None, None, 83.8, 82.6, 85.0, 81.7, ""),
    (50, "Neural codes", "supervised", "CE Loss", "AlexNet", "FC6", "PCA", "128",
     78.9, 3.29, None, 55.7, 52.3, None, None, "Paris6k cell is empty in the md (read as not reported)"),
    (52, "Non-metric", "supervised", "Regression Loss", "VGG16", "Conv5", "PCA_w", "512",
     None, None, None, 88.2, 82.1, 88.2, 82.9, "Table 2.1 lists [52] at 55.5 (Oxford5k) and 71.0 (Paris6k)"),
    (89, "Faster R-CNN", "supervised", "Regression Loss", "VGG16", "Conv5", "MP / SP", "512",
     None, None, None, 75.1, None, 80.7, None, ""),
    (53, "SIAM-FV", "supervised", "Siamese Loss", "VGG16", "Conv5", "FV + PCA_w", "512",
     None, None, None, 81.5, 76.6, 82.4, None, "UKBench cell is empty in the md (read as not reported)"),
    (171, "SIFT-CNN", "supervised", "Siamese Loss", "VGG16", "Conv5", "?", "512",
     88.4, 3.91, None, None, None, None, None, "enhancement cell is a single unreadable glyph ('ß')"),
    (142, "Quartet-Net", "supervised", "Siamese Loss", "VGG16", "FC6", "PCA", "128",
     71.2, None, 87.5, 48.5, None, 48.8, None, "UKBench reported as mAP, not N-S"),
    (55, "NetVLAD", "supervised", "Triplet Loss", "VGG16", "VLAD Layer", "PCA_w", "256",
     79.9, None, None, 62.5, None, 72.0, None, ""),
    (140, "Deep Retrieval", "supervised", "Triplet Loss", "ResNet-101", "Conv5 Block", "MP + PCA_w", "2048",
     90.3, None, None, 86.1, 82.8, 94.5, 90.6,
     "enhancement cell reads 'Pr' under 'MP+' over PCA_w; read as MP + PCA_w (its highlights say R-MAC)"),
    (151, "MoM", "unsupervised", "Siamese Loss", "VGG16", "Conv5", "MP + PCA_w", "64",
     87.5, None, None, 78.2, 72.6, 85.1, 78.0, ""),
    (57, "GeM", "unsupervised", "Siamese Loss", "VGG16", "Conv5", "GeM Pooling", "512",
     83.1, None, None, 82.0, 76.9, 79.7, 72.6, "Table 2.1 lists [57] at 64.8 (57.9) on Oxford5k"),
    (32, "SfM-CNN", "unsupervised", "Siamese Loss", "VGG16", "Conv5", "PCA_w", "512",
     82.5, None, None, 77.0, 69.2, 83.8, 76.4, ""),
    (56, "IME-CNN", "unsupervised", "Regression Loss", "ResNet-101", "IME Layer", "MP", "2048",
     None, None, None, 92.0, 87.2, 96.6, 93.3, ""),
    (152, "MDP-CNN", "unsupervised", "Triplet Loss", "ResNet-101", "Conv5 Block", "SP", "2048",
     None, None, None, 85.4, 85.1, 96.3, 94.7, ""),
]

# ---------------------------------------------------------------- numbers quoted in §2.5.3's text
# line (1-based, in SOURCE), topic, ref, dataset, distractors, metric, value, quote (verbatim in
# that line), table that holds the same number (None: in no table, or the table disagrees), claim
# (our words). metric: mAP (%), ns (0–4), time_ms, dim (codebook words), regions (per query).
_TEXT = [
    (519, "overview", 27, "oxford5k", None, "mAP", 78.34, "78.34%", None,
     "Early off-the-shelf DCNN result; the start of the survey's 2014-2020 progress curve (Fig. 2.12a)."),
    (519, "overview", 163, "ukbench", None, "mAP", 98.8, "98.8%", None,
     "Graph-based fusion of features reaches this on UKBench, quoted as mAP rather than N-S."),
    (519, "overview", 165, "oxford5k", None, "mAP", 96.2, "96.2%", None,
     "Fine-tuning with manifold learning is the end of the Oxford curve; Table 2.1 lists [165] at 92.6."),
    (523, "fc_vs_conv", 50, "holidays", None, "mAP", 74.7, "74.7%", "2.2",
     "Features from a fully-connected layer trail conv-layer features, which keep spatial structure."),
    (523, "layer_fusion", 92, "holidays", None, "mAP", 91.4, "91.4%", "2.2",
     "Fusing Conv4, Conv5 and FC6 of one network beats a single-layer descriptor."),
    (523, "layer_fusion", 25, "holidays", None, "mAP", 80.2, "80.2%", "2.2",
     "The single-layer (no fusion) baseline of that comparison."),
    (523, "bow_on_conv", 82, "oxford5k", None, "mAP", 73.9, "73.9%", "2.2",
     "BoW over conv features is competitive (the sentence cites no ref; Table 2.2 gives BLCF [82])."),
    (523, "bow_on_conv", 82, "paris6k", None, "mAP", 82.0, "82.0%", "2.2",
     "Same BoW embedding on Paris-6k."),
    (523, "bow_on_conv", 82, None, None, "dim", 25000, "25k", "2.2",
     "Its codebook has 25k words, a cost to search efficiency."),
    (523, "aggregation", 31, "oxford5k", None, "mAP", 66.9, "66.9%", "2.2",
     "Aggregations of the same conv maps differ: R-MAC (text cites [159], Table 2.2 [31])."),
    (523, "aggregation", 25, "oxford5k", None, "mAP", 58.9, "58.9%", "2.2",
     "SPoC, the weaker aggregation in that comparison."),
    (527, "multi_pass", 108, "paris6k", None, "mAP", 87.2, "87.2%", "2.2",
     "Patches from a rigid grid give competitive multi-pass results."),
    (527, "multi_pass", 85, "ukbench", None, "ns", 3.81, "3.81", "2.2",
     "Region proposals on the shallow AlexNet beat single-pass deeper nets [25, 50, 92] on UKBench."),
    (527, "model_fusion", 48, "holidays", None, "mAP", 81.74, "81.74%", "2.2",
     "Fusing AlexNet and VGG (model-level fusion); Table 2.2 rounds it to 81.7."),
    (527, "model_fusion", 48, "ukbench", None, "ns", 3.32, "3.32", "2.2",
     "The same fused model on UKBench."),
    (527, "model_fusion", 65, "holidays", None, "mAP", 76.75, "76.75%", "2.2",
     "The unfused multi-pass comparison point (MOF); Table 2.2 rounds it to 76.8."),
    (527, "model_fusion", 65, "ukbench", None, "ns", 3.00, "3.00", "2.2",
     "The unfused comparison point on UKBench."),
    (533, "finetune_siamese", 31, "oxford5k", None, "mAP", 66.9, "66.9%", "2.2",
     "Off-the-shelf VGG before fine-tuning."),
    (533, "finetune_siamese", 53, "oxford5k", None, "mAP", 81.5, "81.5%", "2.3",
     "After fine-tuning with a single-margin Siamese loss: the headline fine-tuning gain."),
    (533, "finetune_classification", 50, "oxford5k", None, "mAP", 55.7, "55.7%", "2.3",
     "Classification (cross-entropy) fine-tuning copes poorly with intra-class variation."),
    (533, "finetune_classification", 106, "oxford5k", None, "mAP", 83.8, "83.8%", "2.3",
     "Cross-entropy fine-tuning recovers with a stronger backbone and attention (DELF)."),
    (533, "finetune_verification", 89, "oxford5k", None, "mAP", 75.1, "75.1%", "2.3",
     "A region proposal network retrained with a regression loss."),
    (533, "finetune_verification", 89, "paris6k", None, "mAP", 80.7, "80.7%", "2.3",
     "The same on Paris-6k."),
    (533, "finetune_verification", 52, "oxford5k", None, "mAP", 88.2, "88.2%", "2.3",
     "Learning a transformation for visual similarity does better (Table 2.1 has other values for [52])."),
    (533, "finetune_verification", 52, "paris6k", None, "mAP", 88.2, "88.2%", "2.3",
     "The same on Paris-6k."),
    (548, "finetune_verification", 140, "oxford5k", None, "mAP", 86.1, "86.1%", "2.3",
     "Training the proposal network with a triplet loss instead lifts results markedly."),
    (548, "finetune_verification", 140, "paris6k", None, "mAP", 94.5, "94.5%", "2.3",
     "The same on Paris-6k."),
    (548, "embedding", 53, "oxford5k", None, "mAP", 81.5, "81.5%", "2.3",
     "Fisher-Vector embedding of Conv5 maps."),
    (548, "embedding", 55, "oxford5k", None, "mAP", 62.5, "62.5%", "2.3",
     "VLAD embedding does worse (text cites [32, 55]; the value is NetVLAD's row)."),
    (550, "sup_vs_unsup", 171, "holidays", None, "mAP", 88.4, "88.4%", "2.3",
     "Supervised Siamese fine-tuning."),
    (550, "sup_vs_unsup", 32, "holidays", None, "mAP", 82.5, "82.5%", "2.3",
     "Unsupervised fine-tuning with the same loss scores lower."),
    (550, "sup_vs_unsup", 57, "holidays", None, "mAP", 83.1, "83.1%", "2.3",
     "Unsupervised fine-tuning with the same loss scores lower."),
    (550, "sup_vs_unsup", 151, "holidays", None, "mAP", 87.5, "87.5%", "2.3",
     "Unsupervised fine-tuning with the same loss scores lower."),
    (550, "unsup_manifold", 152, "oxford5k", None, "mAP", 85.4, "85.4%", "2.3",
     "Unsupervised mining through manifold structure matches a supervised method."),
    (550, "unsup_manifold", 152, "paris6k", None, "mAP", 96.3, "96.3%", "2.3",
     "The same on Paris-6k."),
    (550, "unsup_manifold", 140, "oxford5k", None, "mAP", 86.1, "86.1%", "2.3",
     "The supervised method it is matched against."),
    (550, "unsup_manifold", 140, "paris6k", None, "mAP", 94.5, "94.5%", "2.3",
     "The supervised method it is matched against, on Paris-6k."),
    (550, "unsup_ime", 106, "oxford5k", None, "mAP", 83.8, "83.8%", "2.3",
     "ResNet-101 fine-tuned with cross-entropy."),
    (550, "unsup_ime", 56, "oxford5k", None, "mAP", 92.0, "92.0%", "2.3",
     "An IME embedding layer fine-tuned without labels does better still."),
    (552, "efficiency", 153, "oxford5k", "100k", "time_ms", 809, "809ms", "2.1",
     "The slowest search per query in Table 2.1 (Oxford-105k)."),
    (552, "efficiency", 153, "oxford5k", "100k", "mAP", 88.4, "88.4%", "2.1",
     "The accuracy bought with that time."),
    (552, "efficiency", 150, "oxford5k", None, "time_ms", 600, "600ms", "2.1",
     "Regional diffusion is slow on Oxford-5k."),
    (552, "efficiency", 150, "paris6k", None, "time_ms", 700, "700ms", "2.1",
     "Regional diffusion is slow on Paris-6k."),
    (552, "efficiency", 150, None, None, "regions", 21, "21 regional", None,
     "Its cost comes from 21 regional descriptors per query."),
    (552, "accuracy_time_tradeoff", 52, "oxford5k", None, "mAP", 55.5, "55.5%", "2.1",
     "Sub-millisecond search, but mAP below 70."),
    (552, "accuracy_time_tradeoff", 57, "oxford5k", None, "mAP", 64.8, "64.8%", "2.1",
     "Sub-millisecond search, but mAP below 70."),
    (552, "accuracy_time_tradeoff", 172, "oxford5k", None, "mAP", 64.9, "64.9%", "2.1",
     "Sub-millisecond search, but mAP below 70."),
    # The sentence lists refs [150, 153, 165] and values 91.3, 92.6, 95.8 in orders that do not
    # match; the attribution below follows Table 2.1.
    (552, "accuracy_time_tradeoff", 153, "oxford5k", None, "mAP", 91.3, "91.3%", "2.1",
     "High mAP, paid for with at least 2 ms per query."),
    (552, "accuracy_time_tradeoff", 165, "oxford5k", None, "mAP", 92.6, "92.6%", "2.1",
     "High mAP, paid for with at least 2 ms per query."),
    (552, "accuracy_time_tradeoff", 150, "oxford5k", None, "mAP", 95.8, "95.8%", "2.1",
     "High mAP (regional diffusion), paid for with 600 ms per query."),
]
_TEXT_COLUMNS = ["line", "topic", "ref", "dataset", "distractors", "metric", "value", "quote", "table", "claim"]

# ---------------------------------------------------------------- Figures 2.12–2.13
_NOT_IN_TEXT = "per-point values are not in the text (the figure is an image): compare shapes and trends, not points"
FIGURE_CLAIMS = {
    "2.12a": {
        "caption_line": 531, "text_line": 519,
        "claim": "Best reported results on the four benchmarks rose from 2014 to 2020, driven by feature "
                 "fusion, aggregation and fine-tuning.",
        "setup": {"source": "literature results", "datasets": ["oxford5k", "paris6k", "holidays", "ukbench"]},
        "trend": "increasing over years",
        "values_available": False, "note": _NOT_IN_TEXT,
    },
    "2.12b": {
        "caption_line": 531, "text_line": 560,
        "claim": "On one frozen VGG, the aggregation methods of Figure 2.6 give different mAP.",
        "setup": {"backbone": "VGG16", "training": "off-the-shelf (no parameter updates)",
                  "methods": ["MAC", "R-MAC", "GeM", "SPoC", "CroW", "CAM+CroW"],  # Figure 2.6's list, md line 186
                  "datasets": ["oxford5k", "paris6k"]},
        "trend": "methods differ; no ranking stated in the text",
        "values_available": False, "note": _NOT_IN_TEXT,
    },
    "2.13a": {
        "caption_line": 566, "text_line": 556,
        "claim": "Deeper backbones retrieve better when everything else is held fixed.",
        "setup": {"backbones": ["AlexNet", "VGG", "GoogLeNet", "ResNet-50", "ResNet-101"],
                  "default_dims": {"AlexNet": 256, "VGG": 512, "GoogLeNet": 1024, "ResNet-50": 2048, "ResNet-101": 2048},
                  "pooling": "MAC", "training": "fine-tuned, same loss and learning rate, cirtorch protocol [57]",
                  "protocol_url": "https://github.com/filipradenovic/cnnimageretrieval-pytorch",
                  "datasets": ["oxford5k", "paris6k", "holidays", "ukbench"]},
        "trend": "increasing with depth",
        "values_available": False, "note": _NOT_IN_TEXT,
    },
    "2.13b": {
        "caption_line": 566, "text_line": 558,
        "claim": "Accuracy grows with descriptor dimension and then levels off; 2048-d is already competitive.",
        "setup": {"backbone": "ResNet-50", "dims": (32, 8192),
                  "how": "fully-connected layers added on top of the pooled conv features",
                  "competitive_dim": 2048},
        "trend": "increasing then saturating",
        "values_available": False, "note": _NOT_IN_TEXT,
    },
}

# Places where the survey disagrees with itself; kept as printed, listed so reports can say so.
INCONSISTENCIES = (
    "[52] Oxford5k / Paris6k: 55.5 / 71.0 in Table 2.1, 88.2 / 88.2 in Table 2.3 and line 533.",
    "[57] Oxford5k: 64.8 (57.9) in Table 2.1, 82.0 (76.9) in Table 2.3.",
    "[165] Oxford5k: 92.6 in Table 2.1, 96.2 in line 519.",
    "R-MAC is cited as [159] in line 523 (the Paris-6k paper in §2.5.1) but as [31] in Table 2.2.",
    "Line 552 lists refs [150, 153, 165] against 91.3, 92.6, 95.8; Table 2.1 gives 153, 165, 150(‡).",
)


def _none_for_missing(df: pd.DataFrame, columns) -> pd.DataFrame:
    # pandas turns None into NaN in mixed columns; keep None so `distractors is None` reads naturally
    for c in columns:
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def _dim(text: str) -> int:
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


def _wide(rows, columns) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    df[_WIDE] = df[_WIDE].astype(float)
    df.insert(df.columns.get_loc("dim_text"), "dim", df["dim_text"].map(_dim))
    return df


def table_2_1() -> pd.DataFrame:
    """Table 2.1, long form: ref, label, dataset, distractors, mAP, ns, time_ms, note."""
    df = pd.DataFrame(_T21, columns=["ref", "label", "dataset", "distractors", "mAP", "ns", "time_ms"])
    df[["mAP", "ns", "time_ms"]] = df[["mAP", "ns", "time_ms"]].astype(float)
    df["note"] = df["label"].map(_T21_NOTES).fillna("")
    return _none_for_missing(df, ["distractors"])


def table_2_2() -> pd.DataFrame:
    """Table 2.2 (off-the-shelf models), one row per method; NaN = not reported."""
    return _wide(_T22, _T22_COLUMNS)


def table_2_3() -> pd.DataFrame:
    """Table 2.3 (fine-tuned models), one row per method; ``type`` is the survey's §2.4 family."""
    df = _wide(_T23, _T23_COLUMNS)
    df.insert(df.columns.get_loc("loss") + 1, "type",
              df["loss"].map(lambda s: "classification" if s == "CE Loss" else "verification"))
    return df


def to_long(wide: pd.DataFrame) -> pd.DataFrame:
    """Tables 2.2/2.3 as tidy rows (ref, method, dataset, distractors, metric, value), NaNs dropped."""
    spec = {"holidays": ("holidays", None, "mAP"), "ukbench_ns": ("ukbench", None, "ns"),
            "ukbench_map": ("ukbench", None, "mAP"), "oxford5k": ("oxford5k", None, "mAP"),
            "oxford105k": ("oxford5k", "100k", "mAP"), "paris6k": ("paris6k", None, "mAP"),
            "paris106k": ("paris6k", "100k", "mAP")}
    long = wide.melt(id_vars=["ref", "method"], value_vars=list(spec), var_name="column").dropna(subset=["value"])
    long[["dataset", "distractors", "metric"]] = pd.DataFrame(long["column"].map(spec).tolist(), index=long.index)
    long = long.drop(columns="column")[["ref", "method", "dataset", "distractors", "metric", "value"]]
    return _none_for_missing(long.reset_index(drop=True), ["distractors"])


def text_numbers() -> pd.DataFrame:
    """Numbers quoted in §2.5.3's running text, with their md line and the claim in our words."""
    df = pd.DataFrame(_TEXT, columns=_TEXT_COLUMNS)
    df["value"] = df["value"].astype(float)
    return _none_for_missing(df, ["dataset", "distractors", "table"])


def figure_claims() -> dict:
    """Claims of Figures 2.12–2.13 (a copy of :data:`FIGURE_CLAIMS`); no per-point values exist."""
    return copy.deepcopy(FIGURE_CLAIMS)


# ---------------------------------------------------------------- Figure 2.12(a): progress timeline
# The survey plots the best results of 2014–2020 but prints neither the points nor its references'
# years (the Markdown has no bibliography). To redraw the curve from the numbers it does print
# (Tables 2.2 and 2.3), each method below is dated by the venue year of the paper the table's
# method name identifies — our addition, not the survey's; undated rows are left out rather than
# guessed. GeM [57] is dated 2018 (TPAMI online; printed 2019).
METHOD_YEARS = {
    "Neural codes": (2014, "Babenko et al., ECCV 2014"),
    "CNNaug-ss": (2014, "Razavian et al., CVPR workshops 2014"),
    "MOP-CNN": (2014, "Gong et al., ECCV 2014"),
    "SPoC": (2015, "Babenko & Lempitsky, ICCV 2015"),
    "R-MAC": (2016, "Tolias et al., ICLR 2016"),
    "CroW": (2016, "Kalantidis et al., ECCV workshops 2016"),
    "BLCF": (2016, "Mohedano et al., ICMR 2016"),
    "Multi-scale CNN": (2016, "Razavian et al., ITE Trans. MTA 2016"),
    "NetVLAD": (2016, "Arandjelović et al., CVPR 2016"),
    "SfM-CNN": (2016, "Radenović et al., ECCV 2016"),
    "Faster R-CNN": (2016, "Salvador et al., CVPR workshops 2016"),
    "Deep Retrieval": (2017, "Gordo et al., IJCV 2017"),
    "DELF": (2017, "Noh et al., ICCV 2017"),
    "SIAM-FV": (2017, "Ong et al., ICIP 2017"),
    "MoM": (2018, "Iscen et al., CVPR 2018"),
    "GeM": (2018, "Radenović et al., TPAMI 2018"),
}
TIMELINE_DATASETS = ("holidays", "ukbench", "oxford5k", "paris6k")


def progress_timeline() -> pd.DataFrame:
    """Figure 2.12(a) redrawn from Tables 2.2–2.3: dated methods, one row per dataset result.

    Columns: method, ref, table, year, venue, dataset, metric, value, best_so_far (the running
    maximum per dataset and metric, the survey's "progress" curve). Without the +100k columns.
    """
    parts = []
    for name, wide in (("2.2", table_2_2()), ("2.3", table_2_3())):
        long = to_long(wide)
        long.insert(2, "table", name)
        parts.append(long[long["distractors"].isna()])
    df = pd.concat(parts, ignore_index=True)
    df = df[df["method"].isin(METHOD_YEARS) & df["dataset"].isin(TIMELINE_DATASETS)].copy()
    df["year"] = df["method"].map(lambda m: METHOD_YEARS[m][0])
    df["venue"] = df["method"].map(lambda m: METHOD_YEARS[m][1])
    df = df.drop(columns="distractors").sort_values(["dataset", "metric", "year", "value"], kind="stable")
    df["best_so_far"] = df.groupby(["dataset", "metric"])["value"].cummax()
    return df.reset_index(drop=True)
