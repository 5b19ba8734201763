import os

import pytest

from d2_nucleus.data.synthetic import generate_dataset

RAW_DATA_ENV = "D2_NUCLEUS_RAW_DATA"
SHARED_DATA_ENV = "D2_NUCLEUS_SHARED_DATA"


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory):
    """A small synthetic raw dataset: 4 train images (256x256, 60-90 nuclei), 2 test images."""
    out = str(tmp_path_factory.mktemp("synthetic") / "raw")
    generate_dataset(out, num_train=4, num_test=2, image_size=256, nuclei_per_image=(60, 90), seed=0)
    return out


@pytest.fixture(scope="session")
def real_raw():
    """The real raw dataset from $D2_NUCLEUS_RAW_DATA; tests using it skip when unset."""
    path = os.environ.get(RAW_DATA_ENV)
    if not path:
        pytest.skip(f"${RAW_DATA_ENV} is not set")
    if not os.path.isdir(path):
        pytest.fail(f"${RAW_DATA_ENV}={path} is not a folder")
    return path


@pytest.fixture(scope="session")
def shared_data():
    """The shared data folder (dataset/, monuseg_xml/, crchisto/) from $D2_NUCLEUS_SHARED_DATA; skip when unset."""
    path = os.environ.get(SHARED_DATA_ENV)
    if not path:
        pytest.skip(f"${SHARED_DATA_ENV} is not set")
    if not os.path.isdir(path):
        pytest.fail(f"${SHARED_DATA_ENV}={path} is not a folder")
    return path


@pytest.fixture(scope="session")
def synthetic_prepared(synthetic_raw, tmp_path_factory):
    """The synthetic raw dataset in the prepared layout (3 train / 1 val images, 2 test)."""
    from d2_nucleus.data import prepare_dataset

    out = str(tmp_path_factory.mktemp("synthetic") / "prepared")
    prepare_dataset(synthetic_raw, out, ratio=0.25, seed=0, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def real_prepared(real_raw, tmp_path_factory):
    """The real raw dataset prepared once per session: (prepared folder, DataReport)."""
    from d2_nucleus.data import prepare_dataset

    out = str(tmp_path_factory.mktemp("real") / "nucleus")
    report = prepare_dataset(real_raw, out, progress=False)
    return out, report
