"""`prt train` on image-text data and `prt generate --image` with a vision-language base (in process)."""

import pytest

pytest.importorskip("mlx.core")

from prtcore.cli.main import main  # noqa: E402


@pytest.mark.parametrize("backend", ("mlx", "torch"))
def test_train_then_generate_with_an_image(capsys, vlm_root, vlm_dirs, vlm_data, images, backend):
    out = vlm_root / f"cli-{backend}"
    assert main(["train", "--backend", backend, "--model", str(vlm_dirs["qwen2_vl"]), "--data", str(vlm_data),
                 "--output-dir", str(out), "--reward", "twin", "--lora-r", "4", "--iters", "2", "--batch-size", "2",
                 "--mask-prompt"]) == 0
    assert (out / "prt_config.json").is_file()
    capsys.readouterr()
    assert main(["generate", "--backend", backend, "--model", str(vlm_dirs["qwen2_vl"]), "--reward", str(out),
                 "--image", str(images[1]), "--prompt", "Which capital is this?", "--max-tokens", "4"]) == 0
    assert capsys.readouterr().out.strip()


def test_generate_refuses_a_missing_image_and_unmatched_markers(capsys, vlm_root, vlm_dirs, images):
    argv = ["generate", "--backend", "torch", "--model", str(vlm_dirs["qwen2_vl"]), "--compose", "base",
            "--prompt", "Hi", "--max-tokens", "2"]
    assert main(argv + ["--image", str(vlm_root / "nope.png")]) == 2
    assert "nope.png: image not found" in capsys.readouterr().err
    assert main(argv + ["--image", str(images[0]), "--image", str(images[1]), "--prompt", "<image> only one"]) == 2
    assert "1 <image> markers for 2 images" in capsys.readouterr().err
