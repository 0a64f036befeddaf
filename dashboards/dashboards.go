package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// SchemaVersion is the Grafana dashboard schema the dashboards are written
// in, that of Grafana 10.4; later versions migrate it when they load it.
const SchemaVersion = 39

// Tag marks every sentinel dashboard; each dashboard links to the others
// through it.
const Tag = "sentinel"

// DatasourceVariable is the name of the template variable every panel and
// query takes its Prometheus data source from.
const DatasourceVariable = "datasource"

// promDatasource is the data source of every panel and target.
var promDatasource = &Datasource{Type: "prometheus", UID: "${" + DatasourceVariable + "}"}

// All returns sentinel's dashboards, in a fixed order.
func All() []Dashboard {
	return []Dashboard{Fleet(), Agent(), Self()}
}

// Dashboard is a Grafana dashboard, as much of its JSON model as sentinel's
// dashboards use. Fields Grafana fills in on import (id, version) are left out.
type Dashboard struct {
	UID           string     `json:"uid"`
	Title         string     `json:"title"`
	Description   string     `json:"description,omitempty"`
	Tags          []string   `json:"tags"`
	Editable      bool       `json:"editable"`
	GraphTooltip  int        `json:"graphTooltip"` // 1: shared crosshair
	Refresh       string     `json:"refresh"`
	SchemaVersion int        `json:"schemaVersion"`
	Time          TimeRange  `json:"time"`
	Timezone      string     `json:"timezone"`
	Links         []Link     `json:"links"`
	Templating    Templating `json:"templating"`
	Panels        []Panel    `json:"panels"`
}

// FileName is the name of the dashboard's JSON file in this directory.
func (d Dashboard) FileName() string { return d.UID + ".json" }

// JSON renders the dashboard as indented JSON with a trailing newline. The
// output is deterministic, so the committed file can be checked against it.
func (d Dashboard) JSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// PromQL is full of < > &; escaped it would be unreadable in review.
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encode dashboard %s: %w", d.UID, err)
	}
	return buf.Bytes(), nil
}

// TimeRange is the dashboard's default time range.
type TimeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Link is a dashboard link; sentinel's link to each other by tag.
type Link struct {
	Title       string   `json:"title"`
	Type        string   `json:"type"`
	Tags        []string `json:"tags"`
	AsDropdown  bool     `json:"asDropdown"`
	IncludeVars bool     `json:"includeVars"`
	KeepTime    bool     `json:"keepTime"`
}

// Templating holds the dashboard's template variables.
type Templating struct {
	List []Variable `json:"list"`
}

// Variable is a template variable of type datasource or query.
type Variable struct {
	Name       string      `json:"name"`
	Label      string      `json:"label"`
	Type       string      `json:"type"`
	Datasource *Datasource `json:"datasource,omitempty"`
	// Query is the plugin type of a datasource variable, the
	// label_values(...) query of a query variable.
	Query      string `json:"query"`
	Definition string `json:"definition,omitempty"`
	Refresh    int    `json:"refresh"` // 1: on load, 2: on time range change
	Regex      string `json:"regex"`
	Sort       int    `json:"sort"` // 1: alphabetical
	Multi      bool   `json:"multi"`
	IncludeAll bool   `json:"includeAll"`
	Hide       int    `json:"hide"`
}

// Datasource references a data source by type and uid.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Panel is one panel of a dashboard.
type Panel struct {
	ID              int              `json:"id"`
	Type            string           `json:"type"`
	Title           string           `json:"title"`
	Description     string           `json:"description,omitempty"`
	Datasource      *Datasource      `json:"datasource,omitempty"`
	GridPos         GridPos          `json:"gridPos"`
	FieldConfig     FieldConfig      `json:"fieldConfig"`
	Options         map[string]any   `json:"options"`
	Targets         []Target         `json:"targets"`
	Transformations []Transformation `json:"transformations,omitempty"`
}

// GridPos places a panel on Grafana's grid of 24 columns.
type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// GridWidth is the number of columns of Grafana's grid.
const GridWidth = 24

// Target is one PromQL query of a panel.
type Target struct {
	RefID        string      `json:"refId"`
	Datasource   *Datasource `json:"datasource,omitempty"`
	EditorMode   string      `json:"editorMode"`
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat,omitempty"`
	Format       string      `json:"format,omitempty"`
	Instant      bool        `json:"instant"`
	Range        bool        `json:"range"`
}

// FieldConfig sets how a panel shows its fields.
type FieldConfig struct {
	Defaults  FieldDefaults `json:"defaults"`
	Overrides []Override    `json:"overrides"`
}

// FieldDefaults applies to every field of a panel.
type FieldDefaults struct {
	Unit       string         `json:"unit,omitempty"`
	Decimals   *int           `json:"decimals,omitempty"`
	Min        *float64       `json:"min,omitempty"`
	Color      *Color         `json:"color,omitempty"`
	Thresholds *Thresholds    `json:"thresholds,omitempty"`
	Mappings   []ValueMapping `json:"mappings,omitempty"`
	Links      []FieldLink    `json:"links,omitempty"`
	Custom     map[string]any `json:"custom,omitempty"`
}

// Color is a field's color scheme.
type Color struct {
	Mode       string `json:"mode"`
	FixedColor string `json:"fixedColor,omitempty"`
}

// Thresholds color values by the step they reach.
type Thresholds struct {
	Mode  string `json:"mode"`
	Steps []Step `json:"steps"`
}

// Step is one threshold; the first step's Value is nil (minus infinity).
type Step struct {
	Color string   `json:"color"`
	Value *float64 `json:"value"`
}

// ValueMapping maps exact values to a text and a color.
type ValueMapping struct {
	Type    string                   `json:"type"` // "value"
	Options map[string]MappingResult `json:"options"`
}

// MappingResult is what a mapped value shows.
type MappingResult struct {
	Text  string `json:"text"`
	Color string `json:"color,omitempty"`
	Index int    `json:"index"`
}

// FieldLink is a data link of a field.
type FieldLink struct {
	Title string `json:"title"`
	URL   string `json:"url"`
}

// Override changes the config of the fields a matcher selects.
type Override struct {
	Matcher    Matcher    `json:"matcher"`
	Properties []Property `json:"properties"`
}

// Matcher selects fields, e.g. byName.
type Matcher struct {
	ID      string `json:"id"`
	Options string `json:"options"`
}

// Property is one overridden field setting.
type Property struct {
	ID    string `json:"id"`
	Value any    `json:"value"`
}

// Transformation reshapes a panel's query results before display.
type Transformation struct {
	ID      string         `json:"id"`
	Options map[string]any `json:"options"`
}
