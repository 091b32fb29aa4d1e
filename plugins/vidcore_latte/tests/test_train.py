"""The training loop: learning, exact resume, EMA, AMP, gradient accumulation, VAE and U-Net training."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from vidcore_latte.system import ModelConfig, load_model, split_state
from vidcore_latte.train.config import TrainConfig
from vidcore_latte.train.ema import EMA
from vidcore_latte.train.trainer import Trainer

from conftest import tiny_train


def test_training_steps_decrease_the_loss_on_a_fixed_batch(tiny_config):
    trainer = Trainer(tiny_config.with_(lr=3e-3, warmup=0, cond_dropout=0.0), resume=False)
    batch = trainer.prepare(trainer.indices(0, 0))
    losses = []
    for _ in range(25):
        trainer.optimizer.zero_grad()
        loss = trainer.losses(batch).mean()
        loss.backward()
        trainer.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_resumed_run_continues_with_identical_losses(tiny_config):
    straight = Trainer(tiny_config.with_(out=tiny_config.out + "-a"), resume=False).run()
    first = Trainer(tiny_config, resume=False)
    part1 = first.run(steps=2)
    assert (first.out / "checkpoints" / "last").read_text() == "step-0000002"
    second = Trainer(tiny_config)  # resumes from step 2
    assert second.step == 2
    part2 = second.run()
    assert part1 + part2 == straight
    log = [json.loads(line) for line in (second.out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    comps, cfg = load_model(second.out / "checkpoints" / "step-0000004" / "ema.safetensors")
    assert cfg == tiny_config.model and set(comps) == {"text_encoder", "denoiser"}


def test_init_fine_tunes_from_trained_weights_and_a_resume_wins(tiny_config, tmp_path):
    from dataclasses import replace

    from vidcore_latte.train.export import export_ema

    from conftest import tiny_model  # noqa: I001

    base = Trainer(tiny_config.with_(steps=2), resume=False)
    base.run()
    export_ema(base, tmp_path / "base.safetensors")
    trained = split_state(load_file(str(tmp_path / "base.safetensors")))
    grown = tiny_config.with_(out=str(tmp_path / "ft"), init=str(tmp_path / "base.safetensors"),
                              model=replace(tiny_model(), dit={**tiny_model().dit, "refine": 4}))
    ft = Trainer(grown, resume=False)
    state = ft.components["denoiser"].state_dict()
    for key, value in trained["denoiser"].items():  # every trained tensor arrives; the refiner is new
        torch.testing.assert_close(state[key], value.float())
    assert any(k.startswith("refiner.") for k in set(state) - set(trained["denoiser"]))
    torch.testing.assert_close(ft.ema.shadow["denoiser.final_proj.weight"], trained["denoiser"]["final_proj.weight"])
    ft.run(steps=2)
    again = Trainer(grown)  # a resumed run continues from its checkpoint, not from init
    assert again.step == 2
    wrong = tiny_config.with_(out=str(tmp_path / "bad"), init=str(tmp_path / "base.safetensors"),
                              model=tiny_model(hidden=64, heads=2))
    with pytest.raises(RuntimeError, match="size mismatch"):
        Trainer(wrong, resume=False)


def test_nested_set_reaches_model_settings():
    from vidcore_latte.train.cli import load_config, parse_settings

    config = load_config("latte-shapes", parse_settings(["model.dit.refine=16", "model.size=32"]))
    assert config.model.dit["refine"] == 16 and config.model.dit["hidden"] == 192 and config.model.size == 32


def test_train_only_fine_tunes_a_head_and_leaves_the_rest_bit_identical(tiny_config, tmp_path):
    from dataclasses import replace

    from conftest import tiny_model  # noqa: I001

    model = replace(tiny_model(), dit={**tiny_model().dit, "refine": 4, "refine_levels": 1})
    trainer = Trainer(tiny_config.with_(model=model, train_only=("denoiser.refiner",)), resume=False)
    before = {k: v.clone() for k, v in trainer.module_for_state().state_dict().items()}
    trainer.run(steps=2)
    after = trainer.module_for_state().state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("denoiser.refiner.") for k in changed)
    assert all(k.startswith("denoiser.refiner.") for k, p in trainer.module_for_state().named_parameters()
               if p.requires_grad)
    with pytest.raises(ValueError, match="no parameters under 'denoiser.refinr'"):
        Trainer(tiny_config.with_(out=str(tmp_path / "typo"), train_only=("denoiser.refinr",)), resume=False)
    with pytest.raises(ValueError, match="non-empty list"):
        tiny_config.with_(train_only="denoiser")


def test_numbers_yaml_reads_as_strings_are_numbers_and_bad_ones_are_one_line():
    from vidcore_latte.train.cli import load_config, parse_settings

    from vidcore.errors import InvalidRequestError

    config = load_config("latte-shapes", parse_settings(["lr=1e-3", "steps=12"]))
    assert config.lr == pytest.approx(1e-3) and isinstance(config.lr, float) and config.steps == 12
    with pytest.raises(InvalidRequestError, match="lr must be a number, not 'fast'"):
        load_config("latte-shapes", parse_settings(["lr=fast"]))


def test_gradient_accumulation_matches_the_full_batch(tiny_config):
    full = Trainer(tiny_config.with_(out=tiny_config.out + "-full", grad_clip=0.0), resume=False)
    accum = Trainer(tiny_config.with_(out=tiny_config.out + "-acc", grad_accum=2, grad_clip=0.0), resume=False)
    assert full.train_step() == pytest.approx(accum.train_step(), rel=1e-5)
    for a, b in zip(full.module.parameters(), accum.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_ema_follows_its_formula():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # decay min(0.9, 1/10) = 0.1
    torch.testing.assert_close(ema.shadow["weight"], 0.1 * start + 0.9 * model.weight.detach())
    ema.updates = 1000
    before = ema.shadow["weight"].clone()
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], 0.9 * before + 0.1 * model.weight.detach())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_runs(tiny_config, amp):
    trainer = Trainer(tiny_config.with_(amp=amp, out=tiny_config.out + amp), resume=False)
    losses = [trainer.train_step() for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert trainer.scaler.is_enabled() == (amp == "fp16")


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_unet_trains_in_pixel_space(tmp_path, prediction):
    model = ModelConfig(denoiser="unet", unet={"base_channels": 8, "groups": 4, "heads": 2, "mid_blocks": 1},
                        text={"dim": 16, "heads": 2}, prediction=prediction, process="vp", frames=4, size=16)
    trainer = Trainer(tiny_train(tmp_path, model=model, predict_prob=0.0), resume=False)
    assert all(torch.isfinite(torch.tensor(trainer.run())))


def test_vae_training_and_latent_dit_on_its_latents(tmp_path):
    vae = {"base_channels": 8, "channel_mult": [1, 2], "temporal_down": [True], "groups": 4, "latent_channels": 4}
    vae_cfg = TrainConfig(model=ModelConfig(vae=vae, text=None, frames=5, size=16), task="vae", batch=2, steps=2,
                          out=str(tmp_path / "vae"), save_every=0, sample_every=2, threads=1)
    trainer = Trainer(vae_cfg, resume=False)
    losses = trainer.run()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert (tmp_path / "vae" / "samples" / "step-0000002" / "reconstruction.mp4").exists()
    vae_file = tmp_path / "vae" / "checkpoints" / "step-0000002" / "ema.safetensors"
    dit = ModelConfig(vae=vae, text={"dim": 16, "heads": 2}, frames=5, size=16, latent_scale=1.0,
                      dit={"hidden": 32, "depth": 1, "heads": 2, "patch": 2, "temporal_patch": 1})
    latent = Trainer(tiny_train(tmp_path, model=dit, vae_model=str(vae_file), predict_prob=0.0, steps=1,
                                sample_every=1, sample_prompts=("a red circle",)), resume=False)
    assert torch.isfinite(torch.tensor(latent.run())).all()
    assert len(list((tmp_path / "run" / "samples" / "step-0000001").glob("*.mp4"))) == 1
    cached = Trainer(tiny_train(tmp_path, model=dit, vae_model=str(vae_file), predict_prob=0.0, steps=1,
                                out=str(tmp_path / "cached"), latent_cache=str(tmp_path / "lat.safetensors"),
                                cache_size=4), resume=False)
    on_the_fly = Trainer(tiny_train(tmp_path, model=dit, vae_model=str(vae_file), predict_prob=0.0, steps=1,
                                    out=str(tmp_path / "fly")), resume=False)
    assert cached.train_step() == pytest.approx(on_the_fly.train_step(), rel=1e-5)  # samples 0..3 either way
    assert (tmp_path / "lat.safetensors").exists()


def test_train_config_by_name_file_or_clear_error(tmp_path, monkeypatch):
    from vidcore_latte.train.cli import load_config

    from vidcore.errors import UnknownNameError

    # the run folder is often named after its config: the built-in name must still win over it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latte-shapes").mkdir()
    assert load_config("latte-shapes").model.size == 64
    assert load_config("latte-shapes", {"steps": 7, "lr": None}).steps == 7
    custom = tmp_path / "mine.yaml"
    custom.write_text("steps: 3\nbatch: 2\n")
    assert (load_config(str(custom)).steps, load_config(str(custom)).batch) == (3, 2)
    with pytest.raises(UnknownNameError, match="latte-shapes"):
        load_config("latte-shape")


def test_set_overrides_any_training_setting():
    from vidcore_latte.train.cli import load_config, parse_settings

    from vidcore.errors import InvalidRequestError

    settings = parse_settings(["time_shift=4", "logit_std=1.0", "amp=bf16", "sample_prompts=[a red circle]"])
    assert settings == {"time_shift": 4, "logit_std": 1.0, "amp": "bf16", "sample_prompts": ["a red circle"]}
    config = load_config("latte-shapes", settings)
    assert (config.time_shift, config.logit_std, config.amp, config.sample_prompts) == (4, 1.0, "bf16",
                                                                                          ("a red circle",))
    with pytest.raises(InvalidRequestError, match="KEY=VALUE"):
        parse_settings(["time_shift"])
    with pytest.raises(InvalidRequestError, match="unknown training settings"):
        load_config("latte-shapes", parse_settings(["time_shfit=4"]))
    assert load_config("latte-shapes", parse_settings(["shape_radius=[0.11, 0.13]"])).shape_radius == (0.11, 0.13)
    with pytest.raises(InvalidRequestError, match="shape_radius"):
        load_config("latte-shapes", parse_settings(["shape_radius=[0.3, 0.2]"]))


def test_init_names_a_missing_weights_file_before_any_work(tmp_path):
    from vidcore_latte.train.cli import main

    from vidcore.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="no weights file"):
        main(["--config", "latte-shapes", "--out", str(tmp_path / "run"), "--set", "init=nope.safetensors"])
    assert not (tmp_path / "run").exists()


def test_blur_settings_reach_the_objective_and_change_only_the_inputs(tiny_config):
    plain = Trainer(tiny_config, resume=False)
    blurred = Trainer(tiny_config.with_(blur_prob=1.0, blur_sigma=(2.0, 3.0)), resume=False)
    assert (blurred.objective.blur_prob, blurred.objective.blur_sigma) == (1.0, (2.0, 3.0))
    a, b = plain.prepare(plain.indices(0, 0)), blurred.prepare(blurred.indices(0, 0))
    assert torch.equal(a["target"], b["target"]) and torch.equal(a["timestep"], b["timestep"])
    assert not torch.allclose(a["x_t"], b["x_t"])


def test_exported_weights_name_the_run_s_files_not_their_paths(tiny_config, tmp_path):
    from safetensors import safe_open
    from vidcore_latte.train.export import export_checkpoint, export_ema

    trainer = Trainer(tiny_config.with_(steps=1, out=str(tmp_path / "deep" / "run"),
                                        init=None), resume=False)
    trainer.run()
    exported = [export_ema(trainer, tmp_path / "a.safetensors"),
                export_checkpoint(trainer.checkpoint_dir(trainer.step), tmp_path / "b.safetensors", half=True)]
    for path in exported:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        config = json.loads(meta["train_config"])
        assert config["out"] == "run" and str(tmp_path) not in meta["train_config"]
        assert meta["step"] == "1"
