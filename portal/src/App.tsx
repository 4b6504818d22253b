import { useEffect, useState, useSyncExternalStore } from "react";
import { authState, can, ops, ROLE_NAMES, signOut, subscribeAuth, type SignedIn } from "./api";
import { OrgProvider, useOrg } from "./org";
import { currentRoute, href, navigate, useRoute } from "./router";
import { SignInPage } from "./pages/SignIn";
import { AcceptPage } from "./pages/Accept";
import { DashboardPage } from "./pages/Dashboard";
import { TimelinePage } from "./pages/Timeline";
import { DevicesPage } from "./pages/Devices";
import { MembersPage } from "./pages/Members";
import { SettingsPage } from "./pages/Settings";
import { RulesPage } from "./pages/Rules";
import { HistoryPage } from "./pages/History";
import { OperationsPage } from "./pages/Operations";
import { ProjectsPage } from "./pages/Projects";
import { WeekPage } from "./pages/Week";
import { ApprovalsPage } from "./pages/Approvals";
import { LeavePage } from "./pages/Leave";
import { PayrollPage } from "./pages/Payroll";
import { Loading } from "./components/ui";

export function App() {
  const auth = useSyncExternalStore(subscribeAuth, authState);
  const route = useRoute();

  if (route.page === "accept") return <AcceptPage params={route.params} />;
  if (auth.status === "loading") {
    return (
      <main className="center">
        <Loading what="Signing in" />
      </main>
    );
  }
  if (auth.status === "signedOut") return <SignInPage reason={auth.reason} />;
  return (
    <OrgProvider key={`${auth.session.orgId}/${auth.session.personId}`} session={auth.session}>
      <Shell session={auth.session} />
    </OrgProvider>
  );
}

interface NavItem {
  page: string;
  label: string;
}

/**
 * Pages that open from their route even when the nav does not list them:
 * the server decides, and its refusal is shown on the page.
 */
const DIRECT_ROUTES = new Set(["history", "operations"]);

function navItems(session: SignedIn, operator: boolean): NavItem[] {
  const may = can(session.role);
  const items: NavItem[] = [
    { page: "dashboard", label: "Dashboard" },
    { page: "timeline", label: "Timeline" },
    { page: "devices", label: "My devices" },
  ];
  if (may.ownWeek) items.push({ page: "week", label: "My week" });
  if (may.approvals) items.push({ page: "approvals", label: "Approvals" });
  items.push({ page: "leave", label: "Leave" });
  items.push({ page: "payroll", label: "Payroll" });
  items.push({ page: "projects", label: "Projects" });
  if (may.membersPage) items.push({ page: "members", label: "Members" });
  if (may.settingsPage) items.push({ page: "settings", label: "Settings" });
  items.push({ page: "rules", label: "Rules" });
  if (may.readHistory) items.push({ page: "history", label: "History" });
  if (operator) items.push({ page: "operations", label: "Operations" });
  return items;
}

function Shell({ session }: { session: SignedIn }) {
  const route = useRoute();
  const { org, nameOf } = useOrg();
  const [open, setOpen] = useState(false);
  // Operations is listed only when ListProjections answers for this user:
  // probed once per sign-in (this Shell is keyed by org and person).
  const [operator, setOperator] = useState(false);
  useEffect(() => {
    let live = true;
    ops.listProjections({}).then(
      () => live && setOperator(true),
      () => live && setOperator(false),
    );
    return () => {
      live = false;
    };
  }, []);
  const items = navItems(session, operator);
  const known = (p: string) => items.some((i) => i.page === p) || DIRECT_ROUTES.has(p);
  const page = known(route.page) ? route.page : "dashboard";

  useEffect(() => {
    // The address as it is now: a link followed between this render and the
    // effect (a quick click right after signing in) is not overwritten.
    const now = currentRoute().page;
    if (now === "" || now === "signin" || !known(now)) {
      navigate("dashboard", undefined, true);
    }
    setOpen(false);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [route.page]);

  return (
    <div className="app">
      <header className="topbar">
        <div className="brand">
          <span className="logo">TrackHrs</span>
          <span className="org" data-testid="org-name">
            {org?.name ?? session.orgId}
          </span>
        </div>
        <button
          type="button"
          className="nav-toggle"
          data-testid="nav-toggle"
          aria-expanded={open}
          aria-controls="main-nav"
          onClick={() => setOpen((o) => !o)}
        >
          <span aria-hidden="true">☰</span> Menu
        </button>
        <nav id="main-nav" className={open ? "nav open" : "nav"} data-testid="nav" aria-label="Main">
          {items.map((item) => (
            <a
              key={item.page}
              href={href(item.page)}
              className={item.page === page ? "active" : undefined}
              aria-current={item.page === page ? "page" : undefined}
              data-testid={`nav-${item.page}`}
            >
              {item.label}
            </a>
          ))}
          <div className="who">
            <span data-testid="session-name" data-person-id={session.personId}>{nameOf(session.personId)}</span>
            <span className="role-badge" data-testid="session-role">
              {ROLE_NAMES[session.role]}
            </span>
            <button type="button" className="link" data-testid="sign-out" onClick={() => void signOut().catch(() => undefined).finally(() => navigate("signin", undefined, true))}>
              Sign out
            </button>
          </div>
        </nav>
      </header>
      <main className="content" data-testid={`page-${page}`}>
        {page === "dashboard" && <DashboardPage />}
        {page === "timeline" && <TimelinePage params={route.params} />}
        {page === "devices" && <DevicesPage />}
        {page === "members" && <MembersPage />}
        {page === "settings" && <SettingsPage />}
        {page === "rules" && <RulesPage />}
        {page === "history" && <HistoryPage params={route.params} />}
        {page === "operations" && <OperationsPage />}
        {page === "week" && <WeekPage params={route.params} />}
        {page === "approvals" && <ApprovalsPage />}
        {page === "projects" && <ProjectsPage />}
        {page === "leave" && <LeavePage />}
        {page === "payroll" && <PayrollPage />}
      </main>
    </div>
  );
}
