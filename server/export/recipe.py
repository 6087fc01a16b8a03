"""The engine recipe a device replays, made from the export config: steps as data and ``trtexec``.

The recipe's schema (:class:`edge_agent.runtime.EngineRecipe`) and file names are the device's.
Each step's ``trtexec`` is one shell line: ``mkdir -p`` of the engine directory, then one trtexec
per engine (a DLA step has one per batch size), with ``$GPU`` and ``$TRT`` expanded by the shell
and every other argument quoted.
"""

from __future__ import annotations

import re
import shlex

from edge_agent.runtime import CALIBRATION_CACHE, TIMING_CACHE, EngineRecipe, EngineStep
from server.export.config import TensorRTConfig

ENGINE_DIR = "engines/$GPU-trt$TRT"
"""Where a recipe's trtexec lines write engines; the shell fills in ``$GPU`` and ``$TRT``."""
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def engine_file(precision: str, profile: str | None = None) -> str:
    """``model.<precision>.plan``, or ``model.<precision>.<profile>.plan`` for a DLA engine."""
    return f"model.{precision}.plan" if profile is None else f"model.{precision}.{profile}.plan"


def _trtexec(
    onnx: str,
    plan: str,
    shape: str,
    batches: tuple[int, int, int],
    cfg: TensorRTConfig,
    extra: list[str],
) -> str:
    if not _SAFE_NAME.fullmatch(plan):
        raise ValueError(f"engine file name {plan!r} must be letters, digits, '.', '_', '-'")
    low, opt, high = batches
    args = [
        f"--minShapes=images:{low}x{shape}",
        f"--optShapes=images:{opt}x{shape}",
        f"--maxShapes=images:{high}x{shape}",
        f"--memPoolSize=workspace:{cfg.workspace_mb}",
        f"--timingCacheFile={TIMING_CACHE}",
        *extra,
    ]
    # double quotes, so the shell expands $GPU and $TRT (shlex.quote would single-quote them)
    onnx_arg = shlex.quote(f"--onnx={onnx}")
    return f'trtexec {onnx_arg} "--saveEngine={ENGINE_DIR}/{plan}" {shlex.join(args)}'


def _command(precision: str, onnx: str, shape: str, cfg: TensorRTConfig, extra: list[str]) -> str:
    """The step's shell line: mkdir, then the GPU engine or one DLA engine per batch size."""
    if cfg.dla_core is None or precision == "fp32":  # fp32 cannot run on DLA
        batches = (cfg.min_batch, cfg.opt_batch, cfg.max_batch)
        builds = [_trtexec(onnx, engine_file(precision), shape, batches, cfg, extra)]
    else:
        dla = [f"--useDLACore={cfg.dla_core}", "--allowGPUFallback"]
        builds = [
            _trtexec(
                onnx,
                engine_file(precision, f"dla{cfg.dla_core}-b{b}"),
                shape,
                (b, b, b),
                cfg,
                [*extra, *dla],
            )
            for b in sorted(set(cfg.dla_batches))
        ]
    return " && ".join([f'mkdir -p "{ENGINE_DIR}"', *builds])


def _step85(precision: str, shape: str, cfg: TensorRTConfig) -> EngineStep:
    """TensorRT 8.5/8.6: builder flags; INT8 from the Q/DQ ONNX (explicit quantization),
    except on DLA, which takes the fp32 ONNX and the calibration cache's ranges."""
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[precision]
    extra = [f"--{f.lower()}" for f in flags]
    onnx, cache = "model.fp32.onnx", None
    if precision == "int8" and cfg.dla_core is None:
        onnx = "model.int8.onnx"  # a Q/DQ model must not be given a calibration table
    elif precision == "int8":
        cache = CALIBRATION_CACHE  # IInt8EntropyCalibrator2 is the calibrator DLA requires
        extra.append(f"--calib={cache}")
    return EngineStep(
        precision=precision,
        trt="8.5",
        onnx=onnx,
        flags=flags,
        calibration_cache=cache,
        verified=False,
        trtexec=_command(precision, onnx, shape, cfg, extra),
    )


def engine_recipe(size: int, cfg: TensorRTConfig, channels: int = 3) -> EngineRecipe:
    """Steps for TensorRT 8.5/8.6 and for 10/11 (strongly typed); verified on no device yet."""
    shape = f"{channels}x{size}x{size}"
    steps: list[EngineStep] = []
    for p in cfg.precisions:
        steps.append(_step85(p, shape, cfg))
        # 10/11: precision comes from the ONNX (fp16 weights, Q/DQ INT8), strongly typed network
        onnx = f"model.{p}.onnx"
        steps.append(
            EngineStep(
                precision=p,
                trt="10+",
                onnx=onnx,
                flags=["STRONGLY_TYPED"],
                verified=False,
                trtexec=_command(p, onnx, shape, cfg, ["--stronglyTyped"]),
            )
        )
    return EngineRecipe(
        input="images",
        image_size=size,
        channels=1 if channels == 1 else 3,
        min_batch=cfg.min_batch,
        opt_batch=cfg.opt_batch,
        max_batch=cfg.max_batch,
        workspace_mb=cfg.workspace_mb,
        dla_core=cfg.dla_core,
        dla_batches=sorted(set(cfg.dla_batches)) if cfg.dla_core is not None else None,
        steps=steps,
    )
