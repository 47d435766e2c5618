"""Tests of the SDK (sdk/spanprobe), one package per SDK package."""
