package dashboards

import (
	"fmt"
	"maps"
	"slices"
)

// Colors of the agent states, the same on every panel.
var stateColors = []struct{ state, color string }{
	{"ACTIVE", "green"},
	{"SILENT", "orange"},
	{"ZOMBIE", "red"},
	{"STOPPED", "blue"},
	{"REVOKED", "purple"},
}

// livenessAlerts selects the firing AgentSilent and AgentZombie alerts
// matching matchers (PromQL label matchers, may be empty).
func livenessAlerts(matchers string) string {
	sel := `alertname=~"AgentSilent|AgentZombie",alertstate="firing"`
	if matchers != "" {
		sel += "," + matchers
	}
	return "ALERTS{" + sel + "}"
}

// dashboard assembles a dashboard: the datasource variable first, then vars,
// then the rows laid out top to bottom.
func dashboard(uid, title, description string, vars []Variable, rows ...gridRow) Dashboard {
	return Dashboard{
		UID:           uid,
		Title:         title,
		Description:   description,
		Tags:          []string{Tag},
		Editable:      true,
		GraphTooltip:  1,
		Refresh:       "30s",
		SchemaVersion: SchemaVersion,
		Time:          TimeRange{From: "now-6h", To: "now"},
		Timezone:      "",
		Links: []Link{{
			Title: "Sentinel", Type: "dashboards", Tags: []string{Tag},
			AsDropdown: true, IncludeVars: true, KeepTime: true,
		}},
		Templating: Templating{List: append([]Variable{datasourceVariable()}, vars...)},
		Panels:     layout(rows),
	}
}

func datasourceVariable() Variable {
	return Variable{
		Name: DatasourceVariable, Label: "Data source", Type: "datasource",
		Query: "prometheus", Refresh: 1,
	}
}

// labelValues is a query variable listing the values of label in series.
func labelValues(name, label, series string, multi bool) Variable {
	q := fmt.Sprintf("label_values(%s, %s)", series, label)
	return Variable{
		Name: name, Label: label, Type: "query", Datasource: promDatasource,
		Query: q, Definition: q, Refresh: 2, Sort: 1,
		Multi: multi, IncludeAll: multi,
	}
}

// gridRow is a row of panels of one height; panels without a width share
// what the others leave of the 24 columns.
type gridRow struct {
	h      int
	panels []Panel
}

func row(h int, panels ...Panel) gridRow { return gridRow{h: h, panels: panels} }

// layout places the rows' panels top to bottom, left to right, numbers
// them, and points them and their queries at the datasource variable.
func layout(rows []gridRow) []Panel {
	var out []Panel
	y := 0
	for _, r := range rows {
		free, unsized := GridWidth, 0
		for _, p := range r.panels {
			if p.GridPos.W == 0 {
				unsized++
			} else {
				free -= p.GridPos.W
			}
		}
		x := 0
		for i, p := range r.panels {
			if p.GridPos.W == 0 {
				p.GridPos.W = free / unsized
				if i == len(r.panels)-1 {
					p.GridPos.W = GridWidth - x // the last takes the remainder
				}
			}
			p.GridPos.X, p.GridPos.Y, p.GridPos.H = x, y, r.h
			x += p.GridPos.W
			p.ID = len(out) + 1
			p.Datasource = promDatasource
			for j := range p.Targets {
				p.Targets[j].RefID = string(rune('A' + j))
				p.Targets[j].Datasource = promDatasource
			}
			out = append(out, p)
		}
		y += r.h
	}
	return out
}

// --- targets

// series is a range query drawn as one line per series, named by legend.
func series(expr, legend string) Target {
	return Target{EditorMode: "code", Expr: expr, LegendFormat: legend, Range: true}
}

// instant is an instant query of a stat panel.
func instant(expr, legend string) Target {
	return Target{EditorMode: "code", Expr: expr, LegendFormat: legend, Instant: true}
}

// tableQuery is an instant query whose series become the rows of a table.
func tableQuery(expr string) Target {
	return Target{EditorMode: "code", Expr: expr, Format: "table", Instant: true}
}

// --- panels

func timeseries(title, description, unit string, targets ...Target) Panel {
	return Panel{
		Type: "timeseries", Title: title, Description: description,
		FieldConfig: FieldConfig{
			Defaults: FieldDefaults{
				Unit:       unit,
				Min:        ptr(0.0),
				Color:      &Color{Mode: "palette-classic"},
				Thresholds: thresholds("green"),
				Custom: map[string]any{
					"drawStyle":         "line",
					"lineInterpolation": "linear",
					"lineWidth":         1,
					"fillOpacity":       10,
					"showPoints":        "never",
					"spanNulls":         false,
					"stacking":          map[string]any{"mode": "none", "group": "A"},
					"thresholdsStyle":   map[string]any{"mode": "off"},
				},
			},
			Overrides: []Override{},
		},
		Options: map[string]any{
			"legend":  map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true, "calcs": []string{}},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"},
		},
		Targets: targets,
	}
}

func stat(title, description, unit string, targets ...Target) Panel {
	return Panel{
		Type: "stat", Title: title, Description: description,
		FieldConfig: FieldConfig{
			Defaults: FieldDefaults{
				Unit:       unit,
				Color:      &Color{Mode: "thresholds"},
				Thresholds: thresholds("green"),
			},
			Overrides: []Override{},
		},
		Options: map[string]any{
			"colorMode":     "value",
			"graphMode":     "none",
			"justifyMode":   "auto",
			"orientation":   "auto",
			"textMode":      "auto",
			"wideLayout":    true,
			"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
		},
		Targets: targets,
	}
}

// table shows the rows of instant table queries; several queries are merged
// into one row per shared label set.
func table(title, description string, targets ...Target) Panel {
	p := Panel{
		Type: "table", Title: title, Description: description,
		FieldConfig: FieldConfig{
			Defaults: FieldDefaults{
				Color:      &Color{Mode: "thresholds"},
				Thresholds: thresholds("text"),
				Custom: map[string]any{
					"align":       "auto",
					"cellOptions": map[string]any{"type": "auto"},
					"inspect":     false,
				},
			},
			Overrides: []Override{},
		},
		Options: map[string]any{
			"cellHeight": "sm",
			"showHeader": true,
			"footer":     map[string]any{"show": false, "reducer": []string{"sum"}, "fields": "", "countRows": false},
		},
		Targets: targets,
	}
	if len(targets) > 1 {
		p.Transformations = append(p.Transformations, Transformation{ID: "merge", Options: map[string]any{}})
	}
	return p
}

// stateTimeline shows 0/1 flags and alerts as colored bands over time.
func stateTimeline(title, description string, targets ...Target) Panel {
	return Panel{
		Type: "state-timeline", Title: title, Description: description,
		FieldConfig: FieldConfig{
			Defaults: FieldDefaults{
				Color:      &Color{Mode: "thresholds"},
				Thresholds: thresholds("green"),
				Custom:     map[string]any{"fillOpacity": 70, "lineWidth": 0},
			},
			Overrides: []Override{},
		},
		Options: map[string]any{
			"alignValue":  "left",
			"mergeValues": true,
			"rowHeight":   0.9,
			"showValue":   "auto",
			"legend":      map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true},
			"tooltip":     map[string]any{"mode": "single", "sort": "none"},
		},
		Targets: targets,
	}
}

// --- panel options

func (p Panel) width(w int) Panel { p.GridPos.W = w; return p }

// stacked stacks a time series panel's series into an area.
func (p Panel) stacked() Panel {
	p.FieldConfig.Defaults.Custom = maps.Clone(p.FieldConfig.Defaults.Custom)
	p.FieldConfig.Defaults.Custom["stacking"] = map[string]any{"mode": "normal", "group": "A"}
	p.FieldConfig.Defaults.Custom["fillOpacity"] = 40
	return p
}

// bars draws a time series panel as bars, for counts of rare events.
func (p Panel) bars() Panel {
	p.FieldConfig.Defaults.Custom = maps.Clone(p.FieldConfig.Defaults.Custom)
	p.FieldConfig.Defaults.Custom["drawStyle"] = "bars"
	p.FieldConfig.Defaults.Custom["fillOpacity"] = 80
	return p
}

// withThresholds colors a stat by the steps; a time series panel draws
// them as dashed lines.
func (p Panel) withThresholds(t *Thresholds) Panel {
	p.FieldConfig.Defaults.Thresholds = t
	if p.Type == "timeseries" {
		p.FieldConfig.Defaults.Custom = maps.Clone(p.FieldConfig.Defaults.Custom)
		p.FieldConfig.Defaults.Custom["thresholdsStyle"] = map[string]any{"mode": "dashed"}
	}
	return p
}

// background colors a whole stat panel, for values that need attention.
func (p Panel) background() Panel {
	p.Options = maps.Clone(p.Options)
	p.Options["colorMode"] = "background"
	return p
}

func (p Panel) withMappings(m ...ValueMapping) Panel {
	p.FieldConfig.Defaults.Mappings = m
	return p
}

func (p Panel) withOverride(field string, props ...Property) Panel {
	p.FieldConfig.Overrides = append(slices.Clip(p.FieldConfig.Overrides),
		Override{Matcher: Matcher{ID: "byName", Options: field}, Properties: props})
	return p
}

// stateColored colors the series or cells named after agent states.
func (p Panel) stateColored() Panel {
	for _, s := range stateColors {
		p = p.withOverride(s.state, fixedColor(s.color))
	}
	return p
}

// organize shows only columns, in order, renamed as given: alternating
// original names and titles. Other fields are hidden.
func (p Panel) organize(hide []string, columns ...string) Panel {
	index, rename := map[string]any{}, map[string]any{}
	for i := 0; i+1 < len(columns); i += 2 {
		index[columns[i]] = i / 2
		if columns[i+1] != columns[i] {
			rename[columns[i]] = columns[i+1]
		}
	}
	exclude := map[string]any{}
	for _, h := range hide {
		exclude[h] = true
	}
	p.Transformations = append(slices.Clip(p.Transformations), Transformation{
		ID:      "organize",
		Options: map[string]any{"excludeByName": exclude, "indexByName": index, "renameByName": rename},
	})
	return p
}

// sortBy sorts a table by a column, largest first.
func (p Panel) sortBy(column string) Panel {
	p.Options = maps.Clone(p.Options)
	p.Options["sortBy"] = []map[string]any{{"displayName": column, "desc": true}}
	return p
}

// --- field settings

// thresholds starts at base and changes color at each step.
func thresholds(base string, steps ...Step) *Thresholds {
	return &Thresholds{Mode: "absolute", Steps: append([]Step{{Color: base}}, steps...)}
}

// at is the threshold step turning color at value.
func at(value float64, color string) Step { return Step{Color: color, Value: &value} }

// flag maps a 0/1 gauge to words and colors.
func flag(no, noColor, yes, yesColor string) ValueMapping {
	return ValueMapping{Type: "value", Options: map[string]MappingResult{
		"0": {Text: no, Color: noColor, Index: 0},
		"1": {Text: yes, Color: yesColor, Index: 1},
	}}
}

// firing names the value of an ALERTS series.
func firing(color string) ValueMapping {
	return ValueMapping{Type: "value", Options: map[string]MappingResult{"1": {Text: "firing", Color: color}}}
}

// stateMapping colors cells holding agent state names.
func stateMapping() ValueMapping {
	m := ValueMapping{Type: "value", Options: map[string]MappingResult{}}
	for i, s := range stateColors {
		m.Options[s.state] = MappingResult{Text: s.state, Color: s.color, Index: i}
	}
	return m
}

func fixedColor(c string) Property {
	return Property{ID: "color", Value: map[string]any{"mode": "fixed", "fixedColor": c}}
}

func unit(u string) Property { return Property{ID: "unit", Value: u} }

func cellBackground() Property {
	return Property{ID: "custom.cellOptions", Value: map[string]any{"type": "color-background", "mode": "basic"}}
}

func ptr[T any](v T) *T { return &v }

// refValue is the column Grafana names the value of the i-th query (0: A)
// of a table panel with several queries.
func refValue(i int) string { return "Value #" + string(rune('A'+i)) }
