import pytest

from ptdit import InputError, geometry, window_for
from ptdit.resolution import (
    SUPPORTED_RESOLUTIONS,
    Size,
    check_size,
    grid_pixels,
    latent_hw,
    latent_size,
    size_bins,
    size_class,
)


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
    assert geometry((1, 64, 32), 2).window == (1, 2, 2)  # 512 x 256: as near the 256 class as the 512, the smaller
    with pytest.raises(InputError, match="^size 288x800 is not on the 512 class's grid: each side must be a multiple "
                                         "of 64 pixels"):
        geometry((1, 100, 36), 2)
    with pytest.raises(InputError, match="patch size"):
        geometry((1, 63, 63), 2)


@pytest.mark.parametrize("res", SUPPORTED_RESOLUTIONS)
def test_each_class_has_its_aspect_ratio_bins_on_its_grid(res):
    """PixArt-alpha's ratios (and their reciprocals), snapped to the class's grid: 25 bins from 1:4 to 4:1, each
    in its own class, each with its transpose, the square among them, their areas near the class's square."""
    bins = size_bins(res)
    grid = grid_pixels(res)
    assert len(bins) == 25 and Size(res, res) in bins and grid == 16 * window_for(res)[2]
    assert bins[0] == Size(2 * res, res // 2) and bins[-1] == Size(res // 2, 2 * res)  # 1:4 and 4:1 exactly
    assert [b.ratio for b in bins] == sorted((b.ratio for b in bins), reverse=True)  # the narrowest first
    for size in bins:
        assert size.height % grid == 0 and size.width % grid == 0 and size_class(size.height, size.width) == res
        assert Size(size.width, size.height) in bins
        assert 0.9 <= size.height * size.width / res ** 2 <= 1.2
        assert window_for(size.height, size.width) == window_for(res)


def test_a_size_on_its_grid_is_accepted_and_another_is_refused_naming_sizes_that_are():
    assert window_for(768, 1408) == (1, 8, 8) and latent_size(768, 1408) == (96, 176)
    assert window_for(192, 320, frames=8) == (4, 2, 2)
    geo = geometry((1, 96, 176), 2)
    assert geo.grid == (1, 48, 88) and geo.windows == (1, 6, 11)
    assert window_for(1024, 1024) == window_for(1024)  # a square size is its resolution
    with pytest.raises(InputError) as refused:
        window_for(720, 1280)
    message = str(refused.value)
    assert message == ("size 1280x720 is not on the 1024 class's grid: each side must be a multiple of 128 pixels "
                       "(one 8 x 8 token window); nearest: 1280x640, 1280x768")
    for named in ("1280x640", "1280x768"):
        width, height = map(int, named.split("x"))
        assert check_size(height, width) == 1024
    for bad in [(0, 256), (256, -32), (256.0, 256), (True, 256)]:
        with pytest.raises(InputError, match="is not a size: pass positive integers WIDTHxHEIGHT"):
            check_size(*bad)


@pytest.mark.parametrize("height,width,nearest", [(256, 65536, "4096x1024"), (16384, 16384, "2048x2048"),
                                                  (96, 96, "256x256"), (64, 4096, "1024x256")])
def test_a_size_outside_the_table_names_the_nearest_in_it(height, width, nearest):
    with pytest.raises(InputError, match=rf"size {width}x{height} is outside the resolution table: a size takes an "
                                         rf"aspect ratio from 1:4 to 4:1 .*; nearest: {nearest}"):
        window_for(height, width)
