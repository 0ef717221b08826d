//! `kubectl baton dashboard`: a web UI served by the binary on loopback that acts
//! with the user's own kubeconfig credentials, so it shows exactly what that user
//! may see and changes only what they may change.
//!
//! - [`rows`], [`job_page`], [`dag`], [`html`]: the pure middle — CRD objects to
//!   view models to markup (the step graph is server-side SVG).
//! - [`live`]: watch caches of Runners and Jobs (and a Job page's Events) opened
//!   with the user's client; pages follow them over server-sent events.
//! - [`logs`]: a step's log relayed from the controller's user log route.
//! - [`access`]: SelfSubjectAccessReviews decide which buttons are drawn
//!   (SubjectAccessReviews, for a proxied user, which rows too).
//! - [`proxy_user`]: behind a proxy that names each user, acting as that user:
//!   its headers checked, changes made by impersonation.
//! - [`actions`]: the buttons' changes, through the plugin's own functions.
//! - [`guard`]: the Host check (DNS rebinding) and the CSRF check.
//! - [`routes`]: the warp routes; the assets are compiled in (`include_str!`).

pub mod access;
pub mod actions;
pub mod dag;
pub mod guard;
pub mod html;
pub mod job_page;
pub mod live;
pub mod logs;
pub mod proxy_user;
pub mod routes;
pub mod rows;
pub mod state;

pub use routes::serve;
pub use state::Dash;
