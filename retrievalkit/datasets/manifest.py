"""Where every benchmark's files come from and how they lie on disk once fetched.

Survey §2.5.1 (datasets); taught in notebooks/00_setup_and_data. Plain data, no I/O: the
downloader (:mod:`retrievalkit.datasets.download`) reads it, the CLI prints it, the loaders
rely on the folder layout it describes under ``<data home>/<name>/``.

Checksum rule (one rule for every file, applied by the downloader):

* ``sha256`` / ``md5`` hold the checksums its publisher released (Fashion-MNIST publishes only
  MD5s) or that were taken from the official file.
* ``copy_sha256`` holds checksums of known re-packed copies that are byte-different but hold the
  same content: the shared course mirror's re-zipped ``coil-100.zip``, Debian's re-gzipped
  Fashion-MNIST files. A file matching either list is accepted.
* When nobody has published an official checksum (COIL-100, the Oxford/Paris/Holidays/UKBench
  image archives), the official file cannot be told from a good one by its hash, so a file from
  the official host is judged by content instead: the archive's own CRCs while extracting plus
  the expected file counts below, which a fetch requires before calling a dataset ready. A file
  from a mirror must still match ``copy_sha256`` where that list is not empty.
"""
from __future__ import annotations

from dataclasses import dataclass

# --- official hosts (keep every URL in this file; hosts move and die) ---------------------------
_OXFORD = "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/"
_PARIS = "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/"
_REVISITOP = "cmp.felk.cvut.cz/revisitop/data/datasets/"
_HOLIDAYS_FTP = "ftp://ftp.inrialpes.fr/pub/lear/douze/data/"
_FASHION_HOSTS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

MB = 1_000_000
GB = 1_000_000_000


@dataclass(frozen=True)
class RemoteFile:
    """One official file.

    ``target`` is a path relative to the dataset root: the file itself for files used as they are
    (``extract=False``), the folder receiving the members for archives (``extract=True``).
    Archive members whose base name matches ``keep`` (an ``fnmatch`` pattern) are extracted,
    flattened into ``target`` when ``flatten`` is true. ``alternatives`` are other official files
    that also provide this one (``holidays_images.dat`` inside ``eval_holidays.tgz``). A lab pack
    (packed by this project from a public copy, served only by a mirror) has no ``urls`` and names
    its source in ``upstream``.
    """

    filename: str
    urls: tuple[str, ...]
    group: str
    target: str
    sha256: tuple[str, ...] = ()
    md5: tuple[str, ...] = ()
    copy_sha256: tuple[str, ...] = ()
    size: int | None = None  # approximate, in bytes
    extract: bool = False
    flatten: bool = True
    keep: str | None = None
    alternatives: tuple["RemoteFile", ...] = ()
    note: str = ""
    upstream: str = ""  # where a lab pack was built from, when no URL serves the pack itself

    @property
    def has_official_checksum(self) -> bool:
        return bool(self.sha256 or self.md5)


@dataclass(frozen=True)
class Layout:
    """What a file group looks like once in place: ``pattern`` (a glob under the dataset root)
    matches ``expected`` files in the official release; a hand-placed copy is accepted from
    ``minimum`` files on (Paris ships ~20 corrupt JPEGs that some copies have dropped)."""

    pattern: str
    expected: int
    minimum: int | None = None

    @property
    def at_least(self) -> int:
        return self.expected if self.minimum is None else self.minimum


@dataclass(frozen=True)
class DatasetManifest:
    """A benchmark: its files (grouped, e.g. ``"gnd"`` and ``"images"``), the layout each group
    produces, and the official image / query counts (Survey Table 2.1's datasets)."""

    name: str
    title: str
    files: tuple[RemoteFile, ...]
    layouts: dict[str, Layout]
    n_images: int
    n_queries: int
    citation: str
    homepage: str = ""
    system_dirs: tuple[str, ...] = ()  # folders where an OS package installs the same files
    note: str = ""
    extra_hint: str = ""  # added to the "not found" message

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.group for f in self.files))

    def files_in(self, groups) -> tuple[RemoteFile, ...]:
        return tuple(f for f in self.files if f.group in set(groups))

    @property
    def download_bytes(self) -> int:
        """Approximate size of all its official files (each counted once)."""
        return sum(f.size or 0 for f in {f.filename: f for f in self.files}.values())

    def summary(self) -> str:
        """One line for ``retrievalkit datasets list``: counts and download size."""
        size = self.download_bytes
        shown = f"{size / GB:.1f} GB" if size >= GB else f"{size / MB:.0f} MB"
        return f"{self.n_images:,} images, {self.n_queries:,} queries, ~{shown}"

    def all_filenames(self) -> list[str]:
        return [c.filename for f in self.files for c in (f, *f.alternatives)]


# --- shared archives -----------------------------------------------------------------------------
def _oxford_images(group: str = "images") -> RemoteFile:
    return RemoteFile(
        filename="oxbuild_images-v1.tgz",
        urls=(_OXFORD + "oxbuild_images-v1.tgz",),
        group=group,
        target="jpg",
        size=1_900 * MB,
        extract=True,
        keep="*.jpg",
        note="faces blurred; the original oxbuild_images.tgz was withdrawn in 2022",
    )


def _paris_images(part: int) -> RemoteFile:
    filename = f"paris_{part}-v1.tgz"
    return RemoteFile(
        filename=filename,
        urls=(_PARIS + filename,),
        group="images",
        target="jpg",
        size=1_200 * MB,
        extract=True,
        keep="*.jpg",
        note="extracts to paris/<landmark>/<name>.jpg, flattened into jpg/; ~20 files are corrupt",
    )


def _gnd_pickle(name: str, sha256: str, size: int) -> RemoteFile:
    path = f"{_REVISITOP}{name}/gnd_{name}.pkl"
    return RemoteFile(
        filename=f"gnd_{name}.pkl",
        urls=("http://" + path, "https://" + path),
        group="gnd",
        target=f"gnd_{name}.pkl",
        sha256=(sha256,),
        size=size,
        note="revisitop ground truth: imlist, qimlist, gnd[{bbx, easy, hard, junk}]",
    )


def _fashion_file(stem: str, md5: str, debian_sha256: str, size: int) -> RemoteFile:
    filename = f"{stem}-ubyte.gz"
    return RemoteFile(
        filename=filename,
        urls=tuple(host + filename for host in _FASHION_HOSTS),
        group="labels" if "labels" in stem else "images",
        target=filename,
        md5=(md5,),
        copy_sha256=(debian_sha256,),
        size=size,
        note="MD5 as published by Zalando Research; the sha256 is Debian's re-gzipped copy",
    )


def _lab_pack(filename: str, sha256: str, size: int, keep: str, upstream: str) -> RemoteFile:
    """A tar packed by this project (sorted names, fixed mtime): its own sha256 is the official one."""
    return RemoteFile(
        filename=filename,
        urls=(),  # no host serves the pack: it comes from a mirror (a course's lab folder)
        group="images",
        target=".",
        sha256=(sha256,),
        size=size,
        extract=True,
        flatten=False,
        keep=keep,
        upstream=upstream,
        note="lab pack built from the upstream copy; see the shared README for how it was made",
    )


def _lab_pack_hint(upstream: str) -> str:
    return (f"This lab pack is on no official host: ask for the course mirror folder (RETRIEVALKIT_MIRROR), "
            f"or rebuild it from {upstream}.")


_SMVS_UPSTREAM = ("https://github.com/kdatsenko/scalable-vocabulary-tree-image-recognition/tree/"
                  "d4516d0a0419aab342fa30b5110ea5759d8c5748/dvd_covers")
_PARIS_MINI_UPSTREAM = ("https://github.com/GrigorySamokhin/Landmark-Image-Retrieval/tree/"
                        "a7bf3c62f809961f5a71bb3824b3e84a3ffb3a45/paris")
_SOP_UPSTREAM = ("https://github.com/VictorNM/triplet-cnn-cbir/tree/"
                 "5a90467c4a99235c7699b9b46c3ae30989f60a40/webapp/static/results")


MANIFEST: dict[str, DatasetManifest] = {
    "coil100": DatasetManifest(
        name="coil100",
        title="COIL-100 (Columbia Object Image Library)",
        files=(
            RemoteFile(
                filename="coil-100.zip",
                urls=("https://www.cs.columbia.edu/CAVE/databases/SLAM_coil-20_coil-100/coil-100/coil-100.zip",),
                group="images",
                target="coil-100",
                copy_sha256=("86aa8f02f192c8109910c4b639c00e8a27d7909d424a42796fb26518238ad052",),
                size=131 * MB,
                extract=True,
                keep="obj*__*.png",
                note="the official archive's checksum is unpublished; copy_sha256 is the shared mirror's re-zip",
            ),
        ),
        layouts={"images": Layout("coil-100/obj*__*.png", 7_200)},
        n_images=7_200,
        n_queries=200,  # this project's default protocol: 4 poses × 50 test objects
        citation="Nene, Nayar & Murase, Columbia Object Image Library (COIL-100), CUCS-006-96, 1996",
        homepage="https://www.cs.columbia.edu/CAVE/software/softlib/coil-100.php",
        note="100 objects × 72 poses (5° steps), 128×128 RGB PNG: coil-100/obj{1..100}__{0..355}.png",
    ),
    "roxford5k": DatasetManifest(
        name="roxford5k",
        title="Revisited Oxford5k",
        files=(
            _gnd_pickle("roxford5k", "ba7967754bd2d7d2210a5799f9c45ad5835e269a80ef9d3eba44caa35816c471", 150_000),
            _oxford_images(),
        ),
        layouts={"gnd": Layout("gnd_roxford5k.pkl", 1), "images": Layout("jpg/*.jpg", 5_063, 4_993)},
        n_images=4_993,
        n_queries=70,
        citation="Radenović et al., Revisiting Oxford and Paris, CVPR 2018",
        homepage="http://cmp.felk.cvut.cz/revisitop/",
    ),
    "rparis6k": DatasetManifest(
        name="rparis6k",
        title="Revisited Paris6k",
        files=(
            _gnd_pickle("rparis6k", "d2e729a5293dda7dda8a15c8383424a42e4964a2c4cfea2f32fa85d11d2df499", 277_000),
            _paris_images(1),
            _paris_images(2),
        ),
        layouts={"gnd": Layout("gnd_rparis6k.pkl", 1), "images": Layout("jpg/*.jpg", 6_412, 6_322)},
        n_images=6_322,
        n_queries=70,
        citation="Radenović et al., Revisiting Oxford and Paris, CVPR 2018",
        homepage="http://cmp.felk.cvut.cz/revisitop/",
    ),
    "oxford5k": DatasetManifest(
        name="oxford5k",
        title="Oxford Buildings (Oxford5k)",
        files=(
            RemoteFile(
                filename="gt_files_170407.tgz",
                urls=(_OXFORD + "gt_files_170407.tgz",),
                group="gnd",
                target="gt",
                sha256=("8fcd4de3e35df382ba05801d5e6b5ff92fe22f8100417565e5a793a3efa513e8",),
                size=8_174,
                extract=True,
                keep="*.txt",
                note="55 queries: <landmark>_<k>_{query,good,ok,junk}.txt",
            ),
            _oxford_images(),
        ),
        layouts={"gnd": Layout("gt/*_query.txt", 55), "images": Layout("jpg/*.jpg", 5_063, 5_062)},
        n_images=5_063,
        n_queries=55,
        citation="Philbin et al., Object retrieval with large vocabularies and fast spatial matching, CVPR 2007",
        homepage="https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/",
    ),
    "paris6k": DatasetManifest(
        name="paris6k",
        title="Paris Buildings (Paris6k)",
        files=(
            RemoteFile(
                filename="paris_120310.tgz",
                urls=(_PARIS + "paris_120310.tgz",),
                group="gnd",
                target="gt",
                size=20_000,
                extract=True,
                keep="*.txt",
                note="55 queries: <landmark>_<k>_{query,good,ok,junk}.txt",
            ),
            _paris_images(1),
            _paris_images(2),
        ),
        layouts={"gnd": Layout("gt/*_query.txt", 55), "images": Layout("jpg/*.jpg", 6_412, 6_392)},
        n_images=6_412,
        n_queries=55,
        citation="Philbin et al., Lost in quantization, CVPR 2008",
        homepage="https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/",
        note="about 20 of the 6,412 images are corrupt; loaders skip and report them",
    ),
    "holidays": DatasetManifest(
        name="holidays",
        title="INRIA Holidays",
        files=(
            RemoteFile(
                filename="holidays_images.dat",
                urls=(),  # no official bare copy: mirrors hold it, officially it ships in eval_holidays.tgz
                group="gnd",
                target="holidays_images.dat",
                sha256=("0bdc4e645a43c7d9bcbb0aa34106aea9435854cbd60ee698a5caf368585ffa62",),
                size=16_400,
                alternatives=(
                    RemoteFile(
                        filename="eval_holidays.tgz",
                        urls=("http://lear.inrialpes.fr/~jegou/code/eval_holidays.tgz",),
                        group="gnd",
                        target=".",
                        size=500_000,
                        extract=True,
                        keep="holidays_images.dat",
                        note="official evaluation package; only holidays_images.dat is extracted",
                    ),
                ),
                note="1,491 image names; group = id // 100, query = id % 100 == 0",
            ),
            RemoteFile(
                filename="jpg1.tar.gz", urls=(_HOLIDAYS_FTP + "jpg1.tar.gz",), group="images",
                target="jpg", size=1_100 * MB, extract=True, keep="*.jpg",
            ),
            RemoteFile(
                filename="jpg2.tar.gz", urls=(_HOLIDAYS_FTP + "jpg2.tar.gz",), group="images",
                target="jpg", size=1_500 * MB, extract=True, keep="*.jpg",
            ),
        ),
        layouts={"gnd": Layout("holidays_images.dat", 1), "images": Layout("jpg/*.jpg", 1_491)},
        n_images=1_491,
        n_queries=500,
        citation="Jégou, Douze & Schmid, Hamming embedding and weak geometric consistency, ECCV 2008",
        homepage="https://lear.inrialpes.fr/people/jegou/data.php",
        note="full-resolution photos: apply EXIF orientation",
    ),
    "ukbench": DatasetManifest(
        name="ukbench",
        title="University of Kentucky Recognition Benchmark (UKBench)",
        files=(
            RemoteFile(
                filename="ukbench.zip",
                urls=("https://archive.org/download/ukbench/ukbench.zip",),
                group="images",
                target="full",
                size=1_500 * MB,
                extract=True,
                keep="ukbench*.jpg",
                note="full/ukbench00000.jpg … ukbench10199.jpg, groups of 4",
            ),
        ),
        layouts={"images": Layout("full/ukbench*.jpg", 10_200)},
        n_images=10_200,
        n_queries=10_200,
        citation="Nistér & Stewénius, Scalable recognition with a vocabulary tree, CVPR 2006",
    ),
    "fashion_mnist": DatasetManifest(
        name="fashion_mnist",
        title="Fashion-MNIST",
        files=(
            _fashion_file("train-images-idx3", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                          "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", 26_421_880),
            _fashion_file("train-labels-idx1", "25c81989df183df01b3e8a0aad5dffbe",
                          "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056", 29_515),
            _fashion_file("t10k-images-idx3", "bef4ecab320f06d8554ea6380940ec79",
                          "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", 4_422_102),
            _fashion_file("t10k-labels-idx1", "bb300cfdad3c16e7a12a480ee83cd310",
                          "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05", 5_148),
        ),
        layouts={"images": Layout("*-images-idx3-ubyte.gz", 2), "labels": Layout("*-labels-idx1-ubyte.gz", 2)},
        n_images=70_000,
        n_queries=10_000,  # the t10k split, the usual query set when train is the database
        citation="Xiao, Rasul & Vollgraf, Fashion-MNIST, arXiv:1708.07747, 2017",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        extra_hint="On Debian/Ubuntu `apt-get install dataset-fashion-mnist` also provides them.",
    ),
    # --- real instance-retrieval lab packs (DESIGN.md §4; shared README "Lab packs") -----------------
    "smvs_dvd": DatasetManifest(
        name="smvs_dvd",
        title="Stanford Mobile Visual Search, DVD covers (lab pack, phone photos ≤ 640 px)",
        files=(_lab_pack("smvs-dvd-covers-640.tar",
                         "479d6ee6c1e64c7c7869938c95f27803178f75a14fe28ed84abfdd0559f7d5cc",
                         27_340_800, "*.jpg", _SMVS_UPSTREAM),),
        layouts={"images": Layout("smvs-dvd-covers/*/*.jpg", 500)},
        n_images=100,
        n_queries=400,
        citation="Chandrasekhar et al., The Stanford Mobile Visual Search Data Set, ACM MMSys 2011",
        homepage="https://purl.stanford.edu/rb470rw0983",
        note="smvs-dvd-covers/Reference/001-100.jpg (database) and {Canon,Droid,E63,Palm}/001-100.jpg (queries)",
        extra_hint=_lab_pack_hint(_SMVS_UPSTREAM),
    ),
    "rparis6k_mini": DatasetManifest(
        name="rparis6k_mini",
        title="Revisited Paris6k, 250-photo subset (lab pack)",
        files=(
            _gnd_pickle("rparis6k", "d2e729a5293dda7dda8a15c8383424a42e4964a2c4cfea2f32fa85d11d2df499", 277_000),
            _lab_pack("paris6k-mini.tar", "bfab9f41edcbfc7b388d8bc8b538309cec591d58254f0d92f13761236a7aac41",
                      25_456_640, "*.jpg", _PARIS_MINI_UPSTREAM),
        ),
        layouts={"gnd": Layout("gnd_rparis6k.pkl", 1), "images": Layout("paris/*/*.jpg", 250)},
        n_images=238,
        n_queries=12,
        citation="Philbin et al., Lost in quantization, CVPR 2008; Radenović et al., Revisiting Oxford and Paris, CVPR 2018",
        homepage="http://cmp.felk.cvut.cz/revisitop/",
        note="paris/<landmark>/paris_<landmark>_NNNNNN.jpg at the originals' pixel size: revisitop's boxes apply",
        extra_hint=_lab_pack_hint(_PARIS_MINI_UPSTREAM),
    ),
    "sop_kettles_fans": DatasetManifest(
        name="sop_kettles_fans",
        title="Stanford Online Products, kettles and fans (lab pack, ≤ 256 px)",
        files=(_lab_pack("sop-kettles-fans.tar",
                         "0f1b218555568d0686e6c77782ae0e9cc91c2fa8ca9d31421b026ae4aee78e7a",
                         18_933_760, "*.JPG", _SOP_UPSTREAM),),
        layouts={"images": Layout("sop-kettles-fans/*.JPG", 1_600)},
        n_images=1_600,
        n_queries=709,  # test split (products 263-524 of the sorted ids): every photo with a sibling
        citation="Oh Song et al., Deep Metric Learning via Lifted Structured Feature Embedding, CVPR 2016",
        homepage="https://cvgl.stanford.edu/projects/lifted_struct/",
        note="sop-kettles-fans/<product_id>_<k>.JPG; 524 products, label = product id",
        extra_hint=_lab_pack_hint(_SOP_UPSTREAM),
    ),
}


def get(name: str) -> DatasetManifest:
    """The manifest entry of ``name``; unknown names raise ``ValueError`` listing the known ones."""
    key = name.lower().replace("-", "_")
    if key not in MANIFEST:
        raise ValueError(f"unknown dataset {name!r}; datasets with files to fetch: {', '.join(MANIFEST)}")
    return MANIFEST[key]


def names() -> list[str]:
    return list(MANIFEST)


def table() -> list[dict]:
    """One row per dataset (for ``retrievalkit datasets list`` and the README's dataset table)."""
    rows = []
    for m in MANIFEST.values():
        rows.append({
            "name": m.name,
            "title": m.title,
            "images": m.n_images,
            "queries": m.n_queries,
            "download_bytes": m.download_bytes,
            "files": ", ".join(f.filename for f in m.files),
        })
    return rows


__all__ = ["MANIFEST", "DatasetManifest", "Layout", "RemoteFile", "get", "names", "table"]
