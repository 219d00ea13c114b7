"""Feature embedding: local descriptors → codebook → BoW / VLAD / Fisher vectors → (PCA-whitening).

Survey §2.3.2.2 (Eqs. 2.4–2.11) and §2.1 question 1 (deep conv columns vs handcrafted SIFT);
taught in notebooks/05_embeddings_bow_vlad_fv.

The pipeline, with the learning/test protocol made explicit::

    from retrievalkit import embedding as emb
    from retrievalkit.whitening import PCAWhitening

    learn = emb.conv_columns(learn_maps, normalize=True)         # LEARNING-split images
    test = emb.conv_columns(test_maps, normalize=True)           # queries + database
    book = emb.KMeansCodebook(k=64, seed=0).fit(learn, split="learn")
    vlad = emb.VLAD(book)
    pcaw = PCAWhitening(dim=512).fit(vlad.encode(learn))         # whitening learns on the learning split too
    X = pcaw.transform(vlad.encode(test))                        # N×512, L2-normalised rows

Batches are flat (:class:`LocalDescriptors`: ``(Σ T_i)×D`` rows + image index), and every
``encode(local_flat, image_index, n_images)`` (or ``encode(local)``) is vectorised over images.
Heavy libraries (faiss, scikit-learn, OpenCV, torch) load on first use.
"""
from __future__ import annotations

from .bow import BoW
from .codebook import GMMCodebook, KMeansCodebook, check_learning_split
from .fisher import FisherVector
from .invfile import InvertedFile
from .local import (
    LocalDescriptors,
    as_batch,
    column_positions,
    conv_columns,
    dense_grid,
    extract_sift,
    rootsift,
    sift_descriptors,
)
from .vlad import VLAD

EMBEDDINGS = {"bow": BoW, "vlad": VLAD, "fv": FisherVector}

__all__ = [
    "LocalDescriptors", "as_batch", "conv_columns", "column_positions", "sift_descriptors", "extract_sift",
    "rootsift", "dense_grid", "KMeansCodebook", "GMMCodebook", "check_learning_split", "BoW", "VLAD",
    "FisherVector", "InvertedFile", "EMBEDDINGS",
]
