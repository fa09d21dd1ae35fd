"""Group laws, and that every action is a homomorphism: act(g, act(h, x)) == act(g·h, x)."""

import itertools

import pytest
import torch

from equiv.groups import d4, hflip, image_group, permutation, rot90, rot180, trivial

IMAGE_GROUPS = ["rot90", "rot180", "hflip", "d4"]


def all_actions():
    yield from (image_group(n) for n in IMAGE_GROUPS)
    yield from (image_group(n, output="image") for n in IMAGE_GROUPS)
    yield permutation(in_cycles=[[1, 2, 3]], in_size=6,
                      out_cycles=[[0, 4, 2]], out_size=5)
    yield permutation(in_cycles=[[1, 2], [3, 4, 5]], in_size=7)
    yield trivial()


def sample_input(action, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if action.name == "permutation":
        return torch.randint(0, 6, (batch, 5), generator=gen)
    return torch.randn(batch, 2, 5, 5, generator=gen, dtype=torch.float64)


def sample_output(action, batch=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, 5, 5, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("action", list(all_actions()), ids=repr)
def test_group_laws(action):
    n = action.order
    assert all(action.compose(0, g) == g == action.compose(g, 0) for g in range(n))
    for g in range(n):
        assert action.compose(g, action.inverse(g)) == 0 == action.compose(action.inverse(g), g)
    for g, h, k in itertools.product(range(n), repeat=3):
        assert action.compose(action.compose(g, h), k) == action.compose(g, action.compose(h, k))


@pytest.mark.parametrize("action", list(all_actions()), ids=repr)
def test_actions_are_homomorphisms(action):
    x = sample_input(action)
    y = sample_output(action)
    for g, h in itertools.product(action.elements, repeat=2):
        gh = action.compose(g, h)
        assert torch.equal(action.act_in(action.act_in(x, h), g), action.act_in(x, gh))
        if action.name != "permutation":
            assert torch.equal(action.act_out(action.act_out(y, h), g), action.act_out(y, gh))


def test_permutation_outputs_are_homomorphism():
    action = permutation(in_cycles=[[1, 2, 3]], in_size=6,
                         out_cycles=[[0, 4, 2]], out_size=5)
    y = torch.randn(3, 4, 5, dtype=torch.float64)
    for g, h in itertools.product(action.elements, repeat=2):
        lhs = action.act_out(action.act_out(y, h), g)
        assert torch.equal(lhs, action.act_out(y, action.compose(g, h)))


@pytest.mark.parametrize("action", list(all_actions()), ids=repr)
def test_per_example_elements_match_single_elements(action):
    x = sample_input(action, batch=action.order)
    g = torch.arange(action.order).flip(0)
    batched = action.act_in(x, g)
    for b in range(action.order):
        assert torch.equal(batched[b], action.act_in(x[b:b + 1], int(g[b]))[0])


@pytest.mark.parametrize("action", list(all_actions()), ids=repr)
def test_stacked_views_are_group_major(action):
    x = sample_input(action, batch=2)
    stacked = action.act_in_all(x)
    assert stacked.shape == (action.order * 2, *x.shape[1:])
    for g in action.elements:
        assert torch.equal(stacked[2 * g:2 * g + 2], action.act_in(x, g))


def test_image_elements_are_the_documented_transforms():
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(rot90().act_in(x, 1), torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(rot180().act_in(x, 1), torch.flip(x, dims=(-2, -1)))
    assert torch.equal(hflip().act_in(x, 1), torch.flip(x, dims=(-1,)))
    dihedral = d4()
    views = {tuple(dihedral.act_in(x, g).flatten().tolist()) for g in dihedral.elements}
    assert dihedral.order == 8 and len(views) == 8


def test_orders_and_non_involution():
    assert [image_group(n).order for n in IMAGE_GROUPS] == [4, 2, 2, 8]
    rot = rot90()
    assert rot.inverse(1) == 3
    perm = permutation(in_cycles=[[3, 5, 7], [1, 2]], in_size=9)
    assert perm.order == 6
    ids = torch.tensor([[3, 5, 7, 1, 0]])
    assert perm.act_in(ids, 1).tolist() == [[5, 7, 3, 2, 0]]
    assert perm.inverse(1) == 5


def test_permutation_output_moves_scores_with_tokens():
    """A one-hot copy of the input token must be equivariant: scores travel with their token."""
    perm = permutation(in_cycles=[[1, 2, 3]], in_size=5,
                       out_cycles=[[1, 2, 3]], out_size=5)
    ids = torch.tensor([[1, 4, 3]])
    onehot = torch.nn.functional.one_hot(ids, 5).double()
    for g in perm.elements:
        expected = torch.nn.functional.one_hot(perm.act_in(ids, g), 5).double()
        assert torch.equal(perm.act_out(onehot, g), expected)


def test_unknown_image_group_lists_valid_names():
    assert image_group("trivial").order == 1
    with pytest.raises(ValueError, match="valid: rot90, rot180, hflip, d4"):
        image_group("nonsense")


def test_bad_permutation_inputs():
    with pytest.raises(ValueError, match="more than one cycle"):
        permutation(in_cycles=[[1, 2], [2, 3]], in_size=5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        permutation(in_cycles=[[1, 9]], in_size=5)
    with pytest.raises(ValueError, match="square"):
        rot90().act_in(torch.zeros(1, 1, 3, 4), 1)


@pytest.mark.parametrize("name", ["rot90", "rot180", "hflip", "d4"])
@pytest.mark.parametrize("size", [8, 40])            # below and above SMALL_IMAGE_PIXELS
def test_all_views_of_small_and_large_images(name, size):
    """``act_in_all`` gathers small images and rotates/flips large ones: both give every
    element's own action, group-major."""
    from equiv.groups.images import SMALL_IMAGE_PIXELS

    assert (size * size <= SMALL_IMAGE_PIXELS) == (size == 8)
    action = image_group(name)
    x = torch.randn(3, 2, size, size)
    stacked = action.act_in_all(x)
    for g in action.elements:
        assert torch.equal(stacked[3 * g:3 * g + 3], action.act_in(x, g))
