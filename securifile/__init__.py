"""SecuriFile: high-availability encrypted distributed file storage."""
