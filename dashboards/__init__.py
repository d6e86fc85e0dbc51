"""runform.dashboards: static browser front ends served by the server."""
