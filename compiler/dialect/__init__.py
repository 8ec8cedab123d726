"""The ``dataflow`` MLIR dialect (xDSL) and its IRDL contract for upstream MLIR."""

from compiler.dialect import dataflow
from compiler.dialect.dataflow import Dataflow

__all__ = ["Dataflow", "dataflow"]
