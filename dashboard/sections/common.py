"""Small layout helpers shared by the sections."""

from __future__ import annotations

from dash import dash_table, html


def card(title: str, *children, note=None, class_name: str = "") -> html.Section:
    header = [html.H2(title)]
    if note is not None:
        header.append(note)
    return html.Section([html.Div(header, className="card-header"), *children], className=f"card {class_name}".strip())


def table(table_id: str, columns: list[tuple[str, str]], **style) -> dash_table.DataTable:
    """A read-only DataTable with (id, header) columns."""
    return dash_table.DataTable(
        id=table_id,
        columns=[{"id": cid, "name": name} for cid, name in columns],
        data=[],
        style_as_list_view=True,
        style_table={"overflowX": "auto"},
        style_header={"fontWeight": "600", "backgroundColor": "#f3f4f6", "border": "none"},
        style_cell={"fontFamily": "ui-monospace, SFMono-Regular, Menlo, monospace", "fontSize": "13px",
                    "padding": "4px 8px", "textAlign": "right", "border": "none"},
        style_cell_conditional=[{"if": {"column_id": columns[0][0]}, "textAlign": "left"}],
        **style,
    )
