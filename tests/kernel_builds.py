"""The CPU kernel builds as test parameters: every build, the ones this CPU cannot run marked
skipped with the flags it lacks, so a run says which paths went untested."""

import pytest

from kernels import cpu_gemm


def every_build(best_first: bool = False) -> list:
    isas = list(cpu_gemm.ISA_FLAGS) if best_first else list(cpu_gemm.ISA_FLAGS)[::-1]
    if not cpu_gemm.find_compiler():
        return [pytest.param(isa, marks=pytest.mark.skip(reason="no C++ compiler: the kernels are not built here"))
                for isa in isas]
    return [pytest.param(isa, marks=pytest.mark.skip(reason=why)) if (why := cpu_gemm.why_not_run(isa)) else isa
            for isa in isas]


def builds_not_run() -> list[str]:
    """One line per build this machine cannot run (for the end-of-run summary)."""
    return [why for isa in cpu_gemm.ISA_FLAGS if (why := cpu_gemm.why_not_run(isa))]
