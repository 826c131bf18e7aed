import pytest

from ptdit import InputError, geometry, window_for
from ptdit.resolution import SUPPORTED_RESOLUTIONS, latent_hw


@pytest.mark.parametrize("res,window", [(256, (1, 2, 2)), (512, (1, 4, 4)), (1024, (1, 8, 8)), (2048, (1, 16, 16))])
def test_image_table(res, window):
    assert window_for(res) == window
    side = latent_hw(res)
    geo = geometry((1, side, side), patch_size=2)
    assert geo.grid == (1, res // 16, res // 16)
    assert geo.window == window
    assert geo.windows == (1, 8, 8)  # always 8 x 8 windows
    assert geo.num_windows * geo.window_size == geo.num_tokens


def test_video_windows():
    assert window_for(512, frames=16) == (4, 4, 4)
    geo = geometry((8, 64, 64), patch_size=2)
    assert geo.window == (4, 4, 4) and geo.grid == (8, 32, 32) and geo.shift == (2, 2, 2)


@pytest.mark.parametrize("res", [0, 128, 300, 768, 4096])
def test_unsupported_resolution_lists_accepted(res):
    with pytest.raises(InputError) as e:
        window_for(res)
    msg = str(e.value)
    assert str(res) in msg and all(str(r) in msg for r in SUPPORTED_RESOLUTIONS)


@pytest.mark.parametrize("frames", [1, 2, 6, 0, -4])
def test_bad_frame_counts(frames):
    with pytest.raises(InputError, match="multiple of 4"):
        window_for(512, frames=frames)


def test_window_override_is_validated():
    assert geometry((1, 64, 64), 2, window=(1, 4, 8)).window == (1, 4, 8)
    with pytest.raises(InputError, match="does not tile"):
        geometry((1, 64, 64), 2, window=(1, 5, 5))
    with pytest.raises(InputError, match="non-square"):
        geometry((1, 64, 32), 2)
    with pytest.raises(InputError, match="patch size"):
        geometry((1, 63, 63), 2)
