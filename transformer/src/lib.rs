//! The executable specification of the C# ↔ Python SDXL worker protocol.
