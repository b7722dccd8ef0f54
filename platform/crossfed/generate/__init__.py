"""Built-in event generation: Pythia 8 + fastjet + a CMS-like or ATLAS-like detector response, as Ray tasks.

`generate()` writes NanoAOD-like (CMS, GeV) or ATLAS open-data-like (MeV) ROOT files, locally or to a
storage URI; `read_metadata()` returns the generation metadata stored inside them. `connect_ray()`
opens one Ray session for several calls (each call otherwise starts its own when it needs one).
"""

from crossfed.generate.core import generate, measure
from crossfed.generate.detector import ATLAS, CMS, DETECTORS, DetectorResponse
from crossfed.generate.processes import PROCESSES
from crossfed.generate.writer import read_metadata
from crossfed.ray_session import connect_ray

__all__ = ["ATLAS", "CMS", "DETECTORS", "DetectorResponse", "PROCESSES", "connect_ray", "generate", "measure",
           "read_metadata"]
