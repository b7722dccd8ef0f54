"""Built-in event generation: Pythia 8 + fastjet + a CMS-like or ATLAS-like detector response.

`generate()` writes NanoAOD-like (CMS, GeV) or ATLAS open-data-like (MeV) ROOT files;
`read_metadata()` returns the generation metadata stored inside them.
"""

from crossfed.generate.core import generate, measure
from crossfed.generate.detector import ATLAS, CMS, DETECTORS, DetectorResponse
from crossfed.generate.processes import PROCESSES
from crossfed.generate.writer import read_metadata

__all__ = ["ATLAS", "CMS", "DETECTORS", "DetectorResponse", "PROCESSES", "generate", "measure", "read_metadata"]
