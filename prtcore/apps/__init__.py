"""The applications shipped with prtcore: `prt bench` (bench), `prt demo` (demo) and DriveLM (drivelm).

They sit on the top floor (../shared/DESIGN.md, "Layers"): an application uses only the public API of prtcore
(`prtcore.get_backend`, `PRTForCausalLM`, `prtcore.training`, `prtcore.benchmarking`, ...) and of the backends
(the methods of `prtcore.model.Backend`, e.g. `backend.benchmark(...)`); it never imports a plugin's modules
(prt_mlx, prt_torch, ...). Whatever is backend-specific lives in the backend's plugin, behind a method of the
Backend object.
"""
