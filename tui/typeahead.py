"""Forms that keep keys typed ahead in the field they were typed for.

A terminal delivers a paste, or a password manager's typing, as one burst of keys, and the
app routes each key to the focused widget as it reads it. A focus move decided later (a Tab
that bubbles up from the input to the app's binding, an ``Input.Submitted`` message, a
``focus()``, which is deferred) lets the keys behind it land in the old field. As priority
bindings, Tab, Shift+Tab and Enter move focus before the next key is routed; submitting
waits in the field's own queue until the keys typed before the Enter are in.
"""
from textual.actions import SkipAction
from textual.binding import Binding
from textual.widgets import Input

FIELD_KEYS = [
    Binding("tab", "move_focus(1)", show=False, priority=True),
    Binding("shift+tab", "move_focus(-1)", show=False, priority=True),
    Binding("enter", "submit_field", show=False, priority=True),
]


class TypeAheadForm:
    """Mixin for a Screen whose BINDINGS include FIELD_KEYS and that has a ``submit_form()``:
    Enter in a field goes on to ``next_field(input)`` or, when that is None, submits."""

    def action_move_focus(self, step):
        if step > 0:
            self.focus_next()
        else:
            self.focus_previous()

    def action_submit_field(self):
        focused = self.focused
        if not isinstance(focused, Input):
            raise SkipAction()  # Enter on a button or a checkbox: theirs
        following = self.next_field(focused)
        if following is None:
            focused.call_later(self.submit_form)  # after the keys still queued in the field
        else:
            self.set_focus(following)

    def next_field(self, field):
        """The next Input in the form, or None after the last."""
        fields = list(self.query(Input))
        index = fields.index(field)
        return fields[index + 1] if index + 1 < len(fields) else None
