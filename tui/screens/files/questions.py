"""What the Files screen asks before changing anything (the dialogs are ``ConfirmScreen`` and
``NamePrompt`` of ``tui/screens/dialogs.py``, shared with the other screens)."""
NEW_FOLDER_HELP = ("SecuriFile keeps a folder while it holds files. The new folder is shown "
                   "here, marked new, until you upload a file into it (u or U); left empty, "
                   "it is not kept.")


def replace_question(remote, local, folder, version):
    if folder:
        return (f"{remote} exists. Files in {local} replace the files of the same "
                f"name there (each gets a new version); other files stay.")
    return (f"Replace {remote}{f' (version {version})' if version else ''} with "
            f"{local}? It becomes a new version.")


def overwrite_question(local, entry):
    what = "Files in the folder" if entry.is_folder else "It"
    return f"{local} exists. {what} will be overwritten by {entry.target}."


def delete_question(entry):
    if entry.is_folder:
        return (f"Delete the folder {entry.target} and every file in it, on every "
                f"server? This cannot be undone.")
    return (f"Delete {entry.target} (version {(entry.record or {}).get('version')}) "
            f"and all its copies on every server? This cannot be undone.")
