"""Caches that never go stale: content-addressed files, the latent cache (posterior mean/std, flip) and the
text-encoder output cache with caption variants — on a real tiny VAE and text encoder."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdlora.data import augment
from sdlora.data.batch import collate_batch
from sdlora.data.build import build_training_data
from sdlora.data.cache_files import DiskCache, key_digest, module_fingerprint
from sdlora.data.dataset import bucket_pixels
from sdlora.data.latent_cache import cache_latents, encode_posterior
from sdlora.data.posterior import sample_posterior
from sdlora.data.text_cache import cache_text_outputs
from sdlora.errors import SdloraError
from tests.helpers.config import data_config


@pytest.fixture(scope="module")
def tiny():
    from sdlora.models.tiny import TinySD15Family

    family = TinySD15Family()
    return family, family.load()


def _images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i, size in enumerate([(64, 64), (96, 64), (64, 80)]):
        path = root / "2_thing" / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        (root / "2_thing" / f"img{i}.txt").write_text(f"thing, tag{i}, red, big")
    return root


def _data(root: Path, **kw):
    cfg = data_config(train_dir=str(root), **kw)
    return build_training_data(cfg, (64, 64), 0, 1, -1, 1)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- cache files ------------------------------------------------------------------------------------------------------


def test_disk_cache_reuses_only_an_exact_key_and_shape(tmp_path):
    cache = DiskCache(tmp_path / "c")
    key = {"kind": "test", "value": 1}
    tensors = {"mean": torch.ones(4, 2, 3), "std": torch.zeros(4, 2, 3)}
    path = cache.write(key, tensors)
    assert path.name == f"{key_digest(key)}.safetensors"
    assert cache.valid(key, {"mean": (4, 2, 3), "std": (4, 2, 3)})
    assert not cache.valid({"kind": "test", "value": 2})
    assert not cache.valid(key, {"mean": (4, 3, 3), "std": (4, 3, 3)})
    torch.testing.assert_close(DiskCache.load(path)["mean"], tensors["mean"])
    # a file under the right name holding another key (tampered, or a hash collision) is not reused
    other = cache.write({"kind": "other"}, tensors)
    other.replace(path)
    assert not cache.valid(key)
    # a truncated file is not reused either
    cache.write(key, tensors)
    path.write_bytes(path.read_bytes()[:50])
    assert not cache.valid(key)
    assert not list((tmp_path / "c").glob(".*tmp*"))


def test_module_fingerprint_follows_weights_and_dtype(tiny):
    _, components = tiny
    vae = components.vae
    fingerprint = module_fingerprint(vae)
    assert module_fingerprint(vae) == fingerprint
    other = copy.deepcopy(vae)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3
    assert module_fingerprint(other) != fingerprint
    assert module_fingerprint(copy.deepcopy(vae).to(torch.bfloat16)) != fingerprint


def test_sample_posterior_matches_diffusers_sampling(tiny):
    _, components = tiny
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    posterior = components.vae.encode(pixels).latent_dist
    expected = posterior.sample(generator=torch.Generator().manual_seed(3))
    mean, std = encode_posterior(components.vae, pixels)
    got = sample_posterior(mean, std, torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, expected.float())


# --- latent cache -----------------------------------------------------------------------------------------------------


def test_memory_cache_holds_the_posterior_of_the_centred_crop(tiny, tmp_path):
    _, components = tiny
    root = _images(tmp_path / "data")
    data = _data(root)
    report = cache_latents(data.dataset, components.vae, mode="memory")
    assert (report.computed, report.reused) == (3, 0)
    ds = data.dataset
    for index, entry in enumerate(ds.entries):
        item = ds[(index, 1)]
        assert "pixels" not in item and item["latent_mean"].shape == (4, entry.bucket[1] // 8, entry.bucket[0] // 8)
        pixels = torch.from_numpy(bucket_pixels(ds.records[entry.record].path, ds.fit(entry)))[None]
        mean, std = encode_posterior(components.vae, pixels)
        torch.testing.assert_close(item["latent_mean"], mean[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(item["latent_std"], std[0], atol=1e-5, rtol=1e-5)
    batch = collate_batch([ds[(i, 0)] for i in range(2)])
    assert batch.latent_mean.shape[0] == 2 and batch.pixels is None


def test_flip_aug_caches_a_flipped_latent(tiny, tmp_path):
    _, components = tiny
    data = _data(_images(tmp_path / "data"), flip_aug=True)
    report = cache_latents(data.dataset, components.vae, mode="memory", batch_size=4)
    assert report.computed == 6  # 3 images × (plain, flipped)
    ds = data.dataset
    used = set()
    for epoch in range(8):
        flipped = augment.flip_drawn(augment.sample_rng(ds.seed, epoch, 0, augment.FLIP))  # the sample's draw
        expected = ds.latents.get(ds.entries[0].record, flipped)["latent_mean"]
        assert torch.equal(ds[(0, epoch)]["latent_mean"], expected)
        used.add(flipped)
    assert used == {True, False}
    entry = ds.entries[0]
    pixels = torch.from_numpy(bucket_pixels(ds.records[entry.record].path, ds.fit(entry), flipped=True))[None]
    torch.testing.assert_close(
        ds.latents.get(entry.record, True)["latent_mean"], encode_posterior(components.vae, pixels)[0][0], atol=1e-5,
        rtol=1e-5,
    )  # fmt: skip


def test_disk_cache_is_reused_and_invalidated(tiny, tmp_path):
    _, components = tiny
    root = _images(tmp_path / "data")
    before = tree(root)
    folder = tmp_path / "cache"

    def run(vae=components.vae, **kw):
        return cache_latents(_data(root, **kw).dataset, vae, mode="disk", folder=folder, workers=2)

    assert (run().computed, run().reused) == (3, 3)  # the second run reuses every file
    assert len(list(folder.glob("*.safetensors"))) == 3
    # another VAE (one weight changed): everything is recomputed
    other_vae = copy.deepcopy(components.vae)
    with torch.no_grad():
        next(other_vae.parameters()).view(-1)[0] += 1e-2
    assert (lambda r: (r.computed, r.reused))(run(other_vae)) == (3, 0)
    # flip_aug: the flipped latents are new, the plain ones reused
    assert (lambda r: (r.computed, r.reused))(run(flip_aug=True)) == (3, 3)
    # one image's bytes change: only that image is recomputed
    img = root / "2_thing" / "img1.png"
    Image.new("RGB", (96, 64), (1, 2, 3)).save(img)
    report = run()
    assert (report.computed, report.reused) == (1, 2)
    assert report.computed_keys[0]["image_sha256"] == hashlib.sha256(img.read_bytes()).hexdigest()
    # a damaged file is recomputed
    victim = sorted(folder.glob("*.safetensors"))[0]
    victim.write_bytes(b"garbage")
    assert run(flip_aug=True).computed == 1
    # the dataset folder is untouched (only the edit above)
    after = tree(root)
    assert set(after) == set(before)
    assert all(after[k] == before[k] for k in before if k != "2_thing/img1.png")


def test_dataset_reads_disk_cached_latents(tiny, tmp_path):
    _, components = tiny
    data = _data(_images(tmp_path / "data"))
    cache_latents(data.dataset, components.vae, mode="disk", folder=tmp_path / "cache")
    memory = _data(_images(tmp_path / "data"))
    cache_latents(memory.dataset, components.vae, mode="memory")
    for i in range(len(data.dataset)):
        torch.testing.assert_close(data.dataset[(i, 0)]["latent_mean"], memory.dataset[(i, 0)]["latent_mean"])


def test_nan_latents_stop_with_the_image_name(tiny, tmp_path):
    _, components = tiny
    vae = copy.deepcopy(components.vae)
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.fill_(float("nan"))
    data = _data(_images(tmp_path / "data"))
    with pytest.raises(SdloraError, match=r"NaN detected in latents of .*img0\.png"):
        cache_latents(data.dataset, vae, mode="memory")


# --- text-encoder output cache ----------------------------------------------------------------------------------------


def test_text_cache_variants_dropout_and_values(tiny, tmp_path):
    family, components = tiny
    data = _data(_images(tmp_path / "data"), shuffle_caption=True, keep_tokens=1, caption_dropout_every_n_epochs=3)
    report = cache_text_outputs(data.dataset, family, components, to_disk=False, num_variants=4)
    store = data.dataset.text
    variants = store.variants[0]
    assert len(variants) == 4 and all(v.startswith("thing, ") for v in variants) and len(set(variants)) > 1
    assert report.computed == len({c for v in store.variants.values() for c in v} | {""})
    ds = data.dataset
    captions = {ds[(i, epoch)]["caption"] for i in range(len(ds)) for epoch in (0, 1)}
    assert captions <= {c for v in store.variants.values() for c in v} and len(captions) > 3
    item = ds[(0, 2)]  # epoch 3 (1-based) is an every-3rd-epoch dropout
    assert item["caption"] == ""
    expected = family.encode_text(components, [ds[(0, 0)]["caption"]]).hidden_states[0]
    torch.testing.assert_close(ds[(0, 0)]["text_hidden"], expected)
    batch = collate_batch([ds[(i, 0)] for i in range(3)])
    assert batch.text_hidden.shape[:2] == (3, 77) and batch.text_pooled is None


def test_text_cache_on_disk_follows_the_text_encoder(tiny, tmp_path):
    family, components = tiny
    root = _images(tmp_path / "data")
    folder = tmp_path / "cache"

    def run(comp=components, fam=family):
        return cache_text_outputs(_data(root).dataset, fam, comp, to_disk=True, folder=folder, batch_size=2)

    assert (run().computed, run().reused) == (3, 3)
    changed = copy.copy(components)
    changed.text_encoders = [copy.deepcopy(components.text_encoders[0])]
    with torch.no_grad():
        next(changed.text_encoders[0].parameters()).view(-1)[0] += 1e-2
    assert run(changed).computed == 3
    from sdlora.models.tiny import TinySD15Family

    assert run(fam=TinySD15Family(clip_skip=2)).computed == 3  # other encoding settings
    assert run().reused == 3


def test_sdxl_text_cache_carries_the_pooled_output(tmp_path):
    from sdlora.models.tiny import TinySDXLFamily

    family = TinySDXLFamily()
    components = family.load()
    data = _data(_images(tmp_path / "data"))
    cache_text_outputs(data.dataset, family, components, to_disk=False)
    item = data.dataset[(0, 0)]
    text = family.encode_text(components, [item["caption"]])
    torch.testing.assert_close(item["text_hidden"], text.hidden_states[0])
    torch.testing.assert_close(item["text_pooled"], text.pooled[0])
