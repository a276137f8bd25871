//! GraphiQL, served from assets embedded in the binary (graphiql 4.1.2 and React 18.3.1 from the
//! npm registry), so it works with no internet.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::HttpState;

const GRAPHIQL_JS: &[u8] = include_bytes!("../../assets/graphiql/graphiql.min.js");
const GRAPHIQL_CSS: &[u8] = include_bytes!("../../assets/graphiql/graphiql.min.css");
const REACT_JS: &[u8] = include_bytes!("../../assets/graphiql/react.production.min.js");
const REACT_DOM_JS: &[u8] = include_bytes!("../../assets/graphiql/react-dom.production.min.js");

/// The query GraphiQL opens with: the dashboard of every installation.
pub(crate) const EXAMPLE_QUERY: &str = r#"# The dashboard: every installation, its stations and meters.
query Dashboard($from: DateTime!, $to: DateTime!) {
  installations {
    id
    name
    locationName
    chargingStations {
      id
      friendlyName
      chargeMode
      availability
      currentSession { startDate durationSeconds totalSessionEnergy }
      lastSession { endDate totalSessionEnergy totalSessionCost }
      energy: measure(id: "1") {
        values(operator: SUM, from: $from, to: $to, step: HOUR) {
          date tariffType value byTariff { tariff value }
        }
      }
    }
    gridMeters {
      id
      gridSubscription
      currentTariff
      tariffs { id friendlyName currentPrice }
    }
  }
}"#;

fn page(dev_token: Option<&str>) -> String {
    let headers = match dev_token {
        Some(t) => serde_json::json!({ "Authorization": format!("Bearer {t}") }).to_string(),
        None => r#"{"Authorization": "Bearer <paste your token>"}"#.to_string(),
    };
    let today = chrono::Utc::now().date_naive();
    let variables = serde_json::json!({
        "from": format!("{today}T00:00:00Z"),
        "to": format!("{}T00:00:00Z", today.succ_opt().unwrap_or(today)),
    })
    .to_string();
    let config = serde_json::json!({
        "query": EXAMPLE_QUERY,
        "headers": headers,
        "variables": variables,
        "token": dev_token,
    });
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>witty-bff · GraphiQL</title>
  <style>body {{ margin: 0; height: 100vh; }} #graphiql {{ height: 100vh; }}</style>
  <link rel="stylesheet" href="/graphiql/graphiql.min.css">
  <script src="/graphiql/react.production.min.js"></script>
  <script src="/graphiql/react-dom.production.min.js"></script>
  <script src="/graphiql/graphiql.min.js"></script>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script>
    const config = {config};
    const ws = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql";
    const fetcher = GraphiQL.createFetcher({{ url: "/graphql", subscriptionUrl: ws }});
    // The dev token is minted for each page: stored tabs holding the last one get this one.
    const TABS = "graphiql:tabState", TOKEN = "witty-bff:devToken";
    const last = localStorage.getItem(TOKEN);
    if (config.token) {{
      for (const key of [TABS, "graphiql:headers"]) {{
        const stored = localStorage.getItem(key);
        if (last && stored && last !== config.token) localStorage.setItem(key, stored.split(last).join(config.token));
      }}
      localStorage.setItem(TOKEN, config.token);
    }}
    // GraphiQL adds a tab on each load unless the query, variables and headers it is given are
    // those of a stored tab (graphiql 4.1.2): given the active one's, a reload opens the tabs it
    // had, on the same tab. The example is given only when nothing is stored.
    const active = (() => {{
      try {{
        const state = JSON.parse(localStorage.getItem(TABS));
        return state.tabs[state.activeTabIndex];
      }} catch {{
        return undefined;
      }}
    }})();
    const opened = active
      ? {{ query: active.query ?? undefined, variables: active.variables ?? undefined, headers: active.headers ?? undefined }}
      : {{ query: config.query, variables: config.variables, headers: config.headers }};
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, {{
        fetcher,
        ...opened,
        // What a tab added with "+" starts with.
        defaultQuery: config.query,
        defaultHeaders: config.headers,
        shouldPersistHeaders: true,
        defaultEditorToolsVisibility: true,
      }})
    );
  </script>
</body>
</html>"#
    )
}

pub(super) async fn index(State(s): State<HttpState>) -> Html<String> {
    Html(page(s.dev_token.as_ref().map(|mint| mint()).as_deref()))
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (bytes, kind) = match file.as_str() {
        "graphiql.min.js" => (GRAPHIQL_JS, "text/javascript; charset=utf-8"),
        "graphiql.min.css" => (GRAPHIQL_CSS, "text/css; charset=utf-8"),
        "react.production.min.js" => (REACT_JS, "text/javascript; charset=utf-8"),
        "react-dom.production.min.js" => (REACT_DOM_JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=86400")], bytes).into_response()
}
