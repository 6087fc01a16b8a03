"""The engine recipe a device replays, made from the export config: steps as data and ``trtexec``.

The recipe's schema (:class:`edge_agent.runtime.EngineRecipe`) and file names are the device's.
"""

from __future__ import annotations

import shlex

from edge_agent.runtime import CALIBRATION_CACHE, TIMING_CACHE, EngineRecipe, EngineStep
from server.export.config import TensorRTConfig


def _trtexec(onnx: str, plan: str, size: int, cfg: TensorRTConfig, extra: list[str]) -> str:
    shape = f"3x{size}x{size}"
    args = [
        "trtexec",
        f"--onnx={onnx}",
        f"--saveEngine={plan}",
        f"--minShapes=images:{cfg.min_batch}x{shape}",
        f"--optShapes=images:{cfg.opt_batch}x{shape}",
        f"--maxShapes=images:{cfg.max_batch}x{shape}",
        f"--memPoolSize=workspace:{cfg.workspace_mb}",
        f"--timingCacheFile={TIMING_CACHE}",
        *extra,
    ]
    if cfg.dla_core is not None:
        args += [f"--useDLACore={cfg.dla_core}", "--allowGPUFallback"]
    return shlex.join(args)


def engine_recipe(size: int, cfg: TensorRTConfig) -> EngineRecipe:
    """Steps for TensorRT 8.5 (verified on no device yet) and for 10/11 (strongly typed)."""
    steps: list[EngineStep] = []
    for p in cfg.precisions:
        plan = f"engines/$GPU-trt$TRT/model.{p}.plan"
        # 8.5: fp32 ONNX plus builder flags; INT8 calibrated from the entropy cache
        flags85 = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[p]
        extra85 = [f"--{f.lower()}" for f in flags85]
        cache = CALIBRATION_CACHE if p == "int8" else None
        if cache:
            extra85.append(f"--calib={cache}")
        steps.append(
            EngineStep(
                precision=p,
                trt="8.5",
                onnx="model.fp32.onnx",
                flags=flags85,
                calibration_cache=cache,
                verified=False,
                trtexec=_trtexec("model.fp32.onnx", plan, size, cfg, extra85),
            )
        )
        # 10/11: precision comes from the ONNX (fp16 weights, Q/DQ INT8), strongly typed network
        onnx = f"model.{p}.onnx"
        steps.append(
            EngineStep(
                precision=p,
                trt="10+",
                onnx=onnx,
                flags=["STRONGLY_TYPED"],
                verified=False,
                trtexec=_trtexec(onnx, plan, size, cfg, ["--stronglyTyped"]),
            )
        )
    return EngineRecipe(
        input="images",
        image_size=size,
        min_batch=cfg.min_batch,
        opt_batch=cfg.opt_batch,
        max_batch=cfg.max_batch,
        workspace_mb=cfg.workspace_mb,
        dla_core=cfg.dla_core,
        steps=steps,
    )
