"""Assembly of the point-in-time training set (docs/assemble.md).

* :mod:`relgrade.assemble.gating`  - engagement recomputed as of the cut and gated by the
  cascade grade (``gated_preference``: a preference only among relevant pairs, null
  otherwise);
* :mod:`relgrade.assemble.targets` - the blended target, the grades-only and clicks-only
  targets, and the per-query list form;
* :mod:`relgrade.assemble.build`   - entity rows, the Feast point-in-time join, the
  leakage cross-check and the manifest;
* :mod:`relgrade.assemble.report`  - the data-quality report and the rank-correlation
  evidence on dev queries with human grades.
"""
from relgrade.assemble.gating import gate_engagement, refresh_gated_engagement
from relgrade.assemble.targets import add_targets, click_target, list_form, preference_term

__all__ = ["add_targets", "click_target", "gate_engagement", "list_form", "preference_term",
           "refresh_gated_engagement"]
